"""A tenant's audit log, for its owners and admins: newest first, filtered, in cursor pages.

The entries are written by the API's middleware for every successful write
(`api/http/audit.py`) and by the data-protection functions of `common/` (GDPR, webhooks)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from penguinmails.common.db import tenant_connection
from penguinmails.common.db.audit import AuditError, list_entries

from ..auth import Access, Resource, TenantAccess, tenant_access
from ..errors import ApiError, ErrorResponse
from ..models import ApiModel
from ..pagination import Page, PageParams, page_params
from ..services import Services, services

router = APIRouter(tags=["audit-log"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 429)
}


class AuditEntry(ApiModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str | None = None
    source_address: str | None = None
    request_id: str | None = None
    details: dict[str, Any]


@router.get("/tenants/{tenant}/audit-log", responses=_ERRORS, summary="List audit log entries")
async def list_audit_log(
    access: Annotated[TenantAccess, tenant_access(Resource.AUDIT_LOG, Access.READ)],
    page: Annotated[PageParams, Depends(page_params)],
    svc: Annotated[Services, Depends(services)],
    actor: Annotated[
        str | None, Query(max_length=200, description="Exactly this actor, e.g. `user:<id>`.")
    ] = None,
    action: Annotated[
        str | None,
        Query(max_length=100, description="This action, or a prefix: `campaign.*`."),
    ] = None,
    target: Annotated[
        str | None, Query(max_length=500, description="Exactly this target, e.g. `campaign:q4`.")
    ] = None,
    since: Annotated[datetime | None, Query(description="Entries at or after this time.")] = None,
    until: Annotated[datetime | None, Query(description="Entries before this time.")] = None,
) -> Page[AuditEntry]:
    try:
        async with tenant_connection(svc.pool, access.tenant.id) as conn:
            found = await list_entries(
                conn,
                actor=actor,
                action=action,
                target=target,
                since=since,
                until=until,
                limit=page.limit,
                cursor=page.cursor,
            )
    except AuditError as error:
        raise ApiError.invalid(error.message, error.field) from error
    return Page[AuditEntry](
        data=[AuditEntry(**entry.as_json()) for entry in found.entries],
        has_more=found.next_cursor is not None,
        next_cursor=found.next_cursor,
    )
