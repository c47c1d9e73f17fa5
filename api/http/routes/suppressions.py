"""A tenant's suppression list: list, add (one or many), remove, check an address.

Addresses are never stored, only their keyed hash (`common/suppression.py`, HMAC-SHA256 under
the platform's suppression key): a listing shows hashes (hex), reasons, sources and dates, and
a check hashes the address it is given. The rows are the very ones the sender path reads
(`common/db/suppressions.py`). Addresses travel in request bodies, never in URLs; removal
takes the hash a listing shows. Writes record their own audit entry, the target being the
keyed hash as in GDPR erasure (`address:<hex>`), never the address."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import Field

from penguinmails.common.db import keyset, tenant_connection
from penguinmails.common.db import suppressions as entries
from penguinmails.common.db.audit import record
from penguinmails.common.suppression import SuppressionReason, address_hash, suppress

from ..audit import context_of
from ..auth import Access, Resource, TenantAccess, tenant_access
from ..errors import ApiError, ErrorResponse
from ..models import ApiModel
from ..pagination import Page, PageParams, page_params
from ..services import Services, services
from .contacts import hash_key


def _bad_cursor() -> ApiError:
    return ApiError.invalid("Not a cursor of this list: pass `nextCursor` unchanged.", "cursor")


router = APIRouter(tags=["suppression"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 429, 503)
}
_PATH = "/tenants/{tenant}/suppressions"
_CURSOR = "sp1."
_SOURCE = "api"
MAX_BULK = 1000

Reader = Annotated[TenantAccess, tenant_access(Resource.SUPPRESSION, Access.READ)]
Writer = Annotated[TenantAccess, tenant_access(Resource.SUPPRESSION, Access.WRITE)]
Svc = Annotated[Services, Depends(services)]
# Loose on purpose: the address is normalized and checked by hashing it (400 naming the field).
Address = Annotated[
    str, Field(min_length=3, max_length=254, description="The address, e.g. jane@example.com.")
]
HashHex = Annotated[
    str,
    Path(
        pattern=r"^[0-9a-f]{64}$",
        description="The address's keyed hash, as listed (64 lower-case hex digits).",
    ),
]


class Suppression(ApiModel):
    address_hash: str = Field(description="The keyed hash of the address (hex).")
    reason: SuppressionReason
    source: str | None = Field(description="Where it came from: `api`, `dsn`, `arf`, ...")
    created_at: datetime


class SuppressionAdded(Suppression):
    added: bool = Field(description="false: it was on the list already.")


class SuppressionCreate(ApiModel):
    email: Address
    reason: SuppressionReason = SuppressionReason.MANUAL


class BulkSuppressionCreate(ApiModel):
    emails: list[Address] = Field(min_length=1, max_length=MAX_BULK)
    reason: SuppressionReason = SuppressionReason.MANUAL


class BulkSuppressionResult(ApiModel):
    added: int = Field(description="Addresses newly on the list.")
    already_suppressed: int = Field(description="Distinct addresses that were on it already.")


class AddressCheck(ApiModel):
    email: Address


class CheckResult(ApiModel):
    suppressed: bool
    address_hash: str
    reason: SuppressionReason | None = None
    created_at: datetime | None = None


def _hashed(key: bytes, email: str, param: str) -> bytes:
    try:
        return address_hash(key, email)
    except ValueError as error:
        raise ApiError.invalid(
            f"{param}: not an e-mail address, e.g. jane@example.com.", param
        ) from error


def _out(found: entries.Suppression) -> dict[str, Any]:
    return {
        "address_hash": found.address_hash.hex(),
        "reason": found.reason,
        "source": found.source,
        "created_at": found.created_at,
    }


@router.get(_PATH, responses=_ERRORS, summary="List the suppression list")
async def list_suppressions(
    access: Reader,
    svc: Svc,
    page: Annotated[PageParams, Depends(page_params)],
    reason: Annotated[SuppressionReason | None, Query(description="Only this reason.")] = None,
) -> Page[Suppression]:
    """Oldest first: keyed hashes, never addresses."""
    after: tuple[datetime, bytes] | None = None
    if page.cursor is not None:
        found = keyset.decode(_CURSOR, page.cursor)
        try:
            after = (found[0], bytes.fromhex(found[1])) if found else None
        except ValueError:
            after = None
        if after is None:
            raise ApiError.invalid(
                "Not a cursor of this list: pass `nextCursor` unchanged.", "cursor"
            )
    async with tenant_connection(svc.pool, access.tenant.id) as conn:
        rows = await entries.list_suppressions(
            conn, after=after, limit=page.limit + 1, reason=reason.value if reason else None
        )
    more = len(rows) > page.limit
    rows = rows[: page.limit]
    return Page[Suppression](
        data=[Suppression(**_out(r)) for r in rows],
        has_more=more,
        next_cursor=keyset.encode(_CURSOR, rows[-1].created_at, rows[-1].address_hash.hex())
        if more
        else None,
    )


@router.post(_PATH, responses=_ERRORS, summary="Add an address to the suppression list")
async def add_suppression(
    body: SuppressionCreate, request: Request, access: Writer, svc: Svc
) -> SuppressionAdded:
    """Adding an address already listed changes nothing (`added: false`), except that a
    complaint or hard bounce replaces a weaker reason."""
    hashed = _hashed(hash_key(), body.email, "email")
    request.state.audited = True
    async with tenant_connection(svc.pool, access.tenant.id) as conn:
        added = await suppress(conn, hashed, body.reason, _SOURCE)
        found = await entries.get_suppression(conn, hashed)
        await record(
            conn,
            context_of(request, access),
            "suppression.add",
            target=f"address:{hashed.hex()}",
            details={"reason": body.reason.value, "added": added},
        )
    assert found is not None
    return SuppressionAdded(**_out(found), added=added)


@router.post(
    _PATH + "/bulk", responses=_ERRORS, summary="Add up to 1000 addresses to the suppression list"
)
async def add_suppressions(
    body: BulkSuppressionCreate, request: Request, access: Writer, svc: Svc
) -> BulkSuppressionResult:
    """All or nothing: one malformed address refuses the request (400 naming `emails[i]`)."""
    key = hash_key()
    hashes = [_hashed(key, email, f"emails[{i}]") for i, email in enumerate(body.emails)]
    request.state.audited = True
    async with tenant_connection(svc.pool, access.tenant.id) as conn:
        added = await entries.suppress_many(conn, hashes, body.reason, _SOURCE)
        await record(
            conn,
            context_of(request, access),
            "suppression.add_bulk",
            details={"reason": body.reason.value, "addresses": len(set(hashes)), "added": added},
        )
    return BulkSuppressionResult(added=added, already_suppressed=len(set(hashes)) - added)


@router.delete(
    _PATH + "/{address_hash}",
    status_code=204,
    responses=_ERRORS,
    summary="Remove an address from the suppression list",
)
async def remove_suppression(
    address_hash: HashHex, request: Request, access: Writer, svc: Svc
) -> Response:
    """The address may be mailed again: remove only what the recipient asked for or allowed."""
    hashed = bytes.fromhex(address_hash)
    request.state.audited = True
    async with tenant_connection(svc.pool, access.tenant.id) as conn:
        gone = await entries.unsuppress(conn, hashed)
        if gone:
            await record(
                conn,
                context_of(request, access),
                "suppression.remove",
                target=f"address:{address_hash}",
            )
    if not gone:
        raise ApiError.not_found("suppression", "address_hash")
    return Response(status_code=204)


@router.post(_PATH + "/check", responses=_ERRORS, summary="Check whether an address is suppressed")
async def check_suppression(
    body: AddressCheck, request: Request, access: Reader, svc: Svc
) -> CheckResult:
    """A read, in a POST so that the address stays out of URLs and logs."""
    hashed = _hashed(hash_key(), body.email, "email")
    request.state.audited = True  # nothing written: nothing to audit
    async with tenant_connection(svc.pool, access.tenant.id) as conn:
        found = await entries.get_suppression(conn, hashed)
    if found is None:
        return CheckResult(suppressed=False, address_hash=hashed.hex())
    return CheckResult(
        suppressed=True,
        address_hash=hashed.hex(),
        reason=SuppressionReason(found.reason),
        created_at=found.created_at,
    )
