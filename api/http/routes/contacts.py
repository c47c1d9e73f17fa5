"""A tenant's contacts and contact lists: list contacts (by list, by address), show and delete
one; create, list and delete lists. Contacts arrive by import (`contact_imports.py`).

Everything runs in the tenant's scope (`tenant_connection()`), so another tenant's contact or
list is a 404, like one that does not exist. Deleting a contact removes it from its list only
(`common/db/contact_lists.py`): to erase a person everywhere, with the address kept suppressed
as its keyed hash, use `POST .../gdpr/erase`. The middleware audits every write
(`contact.delete`, `contact_list.create`, `contact_list.delete`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import Field

from penguinmails.common.db import contact_lists, keyset, tenant_connection
from penguinmails.common.suppression import address_hash, suppression_key

from ..auth import Access, Resource, TenantAccess, tenant_access
from ..errors import ApiError, ErrorResponse
from ..models import ApiModel
from ..pagination import Page, PageParams, page_params
from ..services import Services, services

__all__ = ["LIST_NAME", "hash_key", "router"]

router = APIRouter(tags=["contacts"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 429, 503)
}
_CONTACT_CURSOR = "ct1."
_LIST_CURSOR = "cl1."

LIST_NAME = r"^[^\x00-\x1f\x7f]{1,200}$"
"""A list's name: 1 to 200 characters, no control characters (names are what Campaigns'
audiences refer to)."""

Reader = Annotated[TenantAccess, tenant_access(Resource.CONTACTS, Access.READ)]
Writer = Annotated[TenantAccess, tenant_access(Resource.CONTACTS, Access.WRITE)]
Svc = Annotated[Services, Depends(services)]


def hash_key() -> bytes:
    """The platform's suppression hash key; 503 when the server has none configured."""
    try:
        return suppression_key()
    except ValueError as error:
        raise ApiError(
            503,
            "api_error",
            "not_configured",
            "Addresses cannot be hashed on this server (PM_SUPPRESSION_KEY is not set).",
        ) from error


class Contact(ApiModel):
    id: uuid.UUID
    list_id: uuid.UUID
    list_name: str
    email: str
    fields: dict[str, Any] = Field(description="The CSV's other columns, by header name.")
    created_at: datetime
    updated_at: datetime


class ContactList(ApiModel):
    id: uuid.UUID
    name: str
    contacts: int = Field(description="Contacts in the list.")
    created_at: datetime


class ContactListCreate(ApiModel):
    name: str = Field(pattern=LIST_NAME, description="The list's name, unique in the tenant.")


def _after(cursor: str | None, prefix: str) -> tuple[datetime, uuid.UUID] | None:
    if cursor is None:
        return None
    found = keyset.decode(prefix, cursor)
    try:
        if found is not None:
            return found[0], uuid.UUID(found[1])
    except ValueError:
        pass
    raise ApiError.invalid("Not a cursor of this list: pass `nextCursor` unchanged.", "cursor")


@router.get("/tenants/{tenant}/contacts", responses=_ERRORS, summary="List contacts")
async def list_contacts(
    access: Reader,
    svc: Svc,
    page: Annotated[PageParams, Depends(page_params)],
    list_name: Annotated[
        str | None,
        Query(alias="list", pattern=LIST_NAME, description="Only the contacts of this list."),
    ] = None,
    email: Annotated[
        str | None,
        Query(
            min_length=3,
            max_length=254,
            description="Only this address (any case): matched by its keyed hash.",
        ),
    ] = None,
) -> Page[Contact]:
    """Oldest first. Filtering by `email` puts the address in the URL: where that matters, use
    `POST .../gdpr/export`, which takes it in the body."""
    hashed: bytes | None = None
    if email is not None:
        try:
            hashed = address_hash(hash_key(), email)
        except ValueError as error:
            raise ApiError.invalid("email: not an e-mail address.", "email") from error
    after = _after(page.cursor, _CONTACT_CURSOR)
    async with tenant_connection(svc.pool, access.tenant.id) as conn:
        rows = await contact_lists.list_contacts(
            conn, list_name=list_name, address_hash=hashed, after=after, limit=page.limit + 1
        )
    more = len(rows) > page.limit
    rows = rows[: page.limit]
    return Page[Contact](
        data=[Contact.model_validate(r, from_attributes=True) for r in rows],
        has_more=more,
        next_cursor=keyset.encode(_CONTACT_CURSOR, rows[-1].created_at, str(rows[-1].id))
        if more
        else None,
    )


@router.get("/tenants/{tenant}/contacts/{contact_id}", responses=_ERRORS, summary="Show a contact")
async def get_contact(contact_id: uuid.UUID, access: Reader, svc: Svc) -> Contact:
    async with tenant_connection(svc.pool, access.tenant.id) as conn:
        found = await contact_lists.get_contact(conn, contact_id)
    if found is None:
        raise ApiError.not_found("contact", "contact_id")
    return Contact.model_validate(found, from_attributes=True)


@router.delete(
    "/tenants/{tenant}/contacts/{contact_id}",
    status_code=204,
    responses=_ERRORS,
    summary="Delete a contact from its list",
)
async def delete_contact(contact_id: uuid.UUID, access: Writer, svc: Svc) -> Response:
    """Removes this contact from its list; not a GDPR erasure (`POST .../gdpr/erase`)."""
    async with tenant_connection(svc.pool, access.tenant.id) as conn:
        gone = await contact_lists.delete_contact(conn, contact_id)
    if not gone:
        raise ApiError.not_found("contact", "contact_id")
    return Response(status_code=204)


@router.post(
    "/tenants/{tenant}/contact-lists",
    status_code=201,
    responses={**_ERRORS, 409: {"model": ErrorResponse}},
    summary="Create a contact list",
)
async def create_list(body: ContactListCreate, access: Writer, svc: Svc) -> ContactList:
    async with tenant_connection(svc.pool, access.tenant.id) as conn:
        made = await contact_lists.create_list(conn, body.name)
    if made is None:
        raise ApiError(
            409,
            "conflict_error",
            "resource_exists",
            f"The tenant has a list named {body.name!r} already.",
            param="name",
        )
    return ContactList.model_validate(made, from_attributes=True)


@router.get("/tenants/{tenant}/contact-lists", responses=_ERRORS, summary="List contact lists")
async def list_lists(
    access: Reader, svc: Svc, page: Annotated[PageParams, Depends(page_params)]
) -> Page[ContactList]:
    after = _after(page.cursor, _LIST_CURSOR)
    async with tenant_connection(svc.pool, access.tenant.id) as conn:
        rows = await contact_lists.list_lists(conn, after=after, limit=page.limit + 1)
    more = len(rows) > page.limit
    rows = rows[: page.limit]
    return Page[ContactList](
        data=[ContactList.model_validate(r, from_attributes=True) for r in rows],
        has_more=more,
        next_cursor=keyset.encode(_LIST_CURSOR, rows[-1].created_at, str(rows[-1].id))
        if more
        else None,
    )


@router.delete(
    "/tenants/{tenant}/contact-lists/{list_id}",
    status_code=204,
    responses=_ERRORS,
    summary="Delete a contact list and its contacts",
)
async def delete_list(list_id: uuid.UUID, access: Writer, svc: Svc) -> Response:
    async with tenant_connection(svc.pool, access.tenant.id) as conn:
        gone = await contact_lists.delete_list(conn, list_id)
    if not gone:
        raise ApiError.not_found("contact list", "list_id")
    return Response(status_code=204)
