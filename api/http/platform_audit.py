"""Audit entries for writes outside any tenant (table platform_audit_log, migration 0010):
a user's own MFA changes, platform administrators' plan edits, suspensions and tier changes.
Append-only for the API's login; writes inside a tenant go to the tenant's audit_log
(api/http/audit.py), where its admins can read them."""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi import Request

from penguinmails.common.db import tenant_connection
from penguinmails.common.db.audit import Context, record

from .services import Services

__all__ = ["record_in_tenant", "record_platform"]


def _source(request: Request) -> str | None:
    return request.client.host if request.client is not None else None


async def record_platform(
    svc: Services,
    request: Request,
    user_id: uuid.UUID,
    action: str,
    target: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    await svc.pool.execute(
        "INSERT INTO platform_audit_log (actor, action, target, source_address, request_id, "
        "details) VALUES ($1, $2, $3, $4, $5, $6::jsonb)",
        f"user:{user_id}",
        action,
        target,
        _source(request),
        request.state.request_id,
        json.dumps(details or {}),
    )


async def record_in_tenant(
    svc: Services,
    request: Request,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    action: str,
    target: str | None = None,
) -> None:
    """An entry in the tenant's own audit log, for a write not routed under its path (an
    invitation accepted, a platform administrator's suspension)."""
    context = Context(f"user:{user_id}", _source(request), request.state.request_id)
    async with tenant_connection(svc.pool, tenant_id) as conn:
        await record(conn, context, action, target=target)
