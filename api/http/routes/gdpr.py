"""GDPR for a tenant's owners and admins: export everything held about one e-mail address
(machine-readable, `penguinmails.contact-export/v1`) and erase it.

The address travels in the body of a POST, never in a URL, so that it reaches no access log,
proxy log or browser history. Both run in the tenant's scope (`tenant_connection()`: the API's
login acting as `penguinmails_app` for this tenant under row-level security), as
`common/db/gdpr.py` expects, and both record their own audit entry (`contact.export`,
`contact.erase`, the target being the keyed hash, never the address)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Request
from pydantic import Field

from penguinmails.common.db import tenant_connection
from penguinmails.common.db.gdpr import GdprError, erase_contact, export_contact
from penguinmails.common.suppression import suppression_key

from ..audit import context_of
from ..auth import Access, Resource, TenantAccess, tenant_access
from ..errors import ApiError, ErrorResponse
from ..models import ApiModel

router = APIRouter(tags=["gdpr"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 429, 503)
}


class ContactAddress(ApiModel):
    # The shape scrub_audit_address() (migration 0006) accepts, without control characters:
    # anything else is refused here naming `email`, not by the database halfway through.
    email: str = Field(
        min_length=3,
        max_length=320,
        pattern=r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s\x00-\x1f\x7f-\x9f]+\.[^@\s\x00-\x1f\x7f-\x9f]+$",
        description="The address, e.g. jane@example.com.",
    )


class Erasure(ApiModel):
    contacts_deleted: int
    contact_fields_scrubbed: int
    deliveries_scrubbed: int
    campaigns_scrubbed: int
    audit_entries_scrubbed: int
    webhook_events_deleted: int
    webhook_attempts_deleted: int
    suppression_added: bool


def _key() -> bytes:
    try:
        return suppression_key()
    except ValueError as error:
        raise ApiError(
            503,
            "api_error",
            "not_configured",
            "GDPR export and erasure are not configured on this server (PM_SUPPRESSION_KEY).",
        ) from error


def _scope(request: Request, access: TenantAccess) -> Any:
    # The library records the audit entry itself (with the keyed hash as target).
    request.state.audited = True
    return tenant_connection(request.app.state.services.pool, access.tenant.id)


@router.post("/tenants/{tenant}/gdpr/export", responses=_ERRORS, summary="Export a contact's data")
async def export(
    body: ContactAddress,
    request: Request,
    # A read: a suspended tenant may still export (the data subject's right of access).
    access: Annotated[TenantAccess, tenant_access(Resource.GDPR, Access.READ)],
) -> dict[str, Any]:
    """Everything the tenant holds about the address: contacts and lists, deliveries (with
    SMTP replies), suppression status, and every other row that mentions it."""
    key = _key()
    try:
        async with _scope(request, access) as conn:
            return await export_contact(conn, key, body.email, context_of(request, access))
    except GdprError as error:
        raise ApiError.invalid(error.message, error.field) from error


@router.post("/tenants/{tenant}/gdpr/erase", responses=_ERRORS, summary="Erase a contact")
async def erase(
    body: ContactAddress,
    request: Request,
    access: Annotated[TenantAccess, tenant_access(Resource.GDPR, Access.WRITE)],
) -> Erasure:
    """Erase the address everywhere (one transaction); its keyed hash stays suppressed, so it
    is never mailed again. Erasing again finds nothing more."""
    key = _key()
    try:
        async with _scope(request, access) as conn:
            report = await erase_contact(conn, key, body.email, context_of(request, access))
    except GdprError as error:
        raise ApiError.invalid(error.message, error.field) from error
    except asyncpg.RaiseError as error:
        # A spelling the pattern let through but the database's own check refuses (the whole
        # erasure was rolled back): still the client's address at fault.
        if "is not an e-mail address" not in str(error):
            raise
        raise ApiError.invalid("Not an e-mail address, e.g. jane@example.com.", "email") from error
    return Erasure(**asdict(report))
