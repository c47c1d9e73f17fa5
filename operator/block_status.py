"""Receivers' blocks in the status of the SmtpServer or SendingDomain they are about (issue 10).

Senders skip a server (or a domain's mail) that receivers blocked `BLOCK_STRIKES` times within
`BLOCK_WINDOW_SECONDS`, for `BLOCK_PAUSE_SECONDS` after the last block (common/db/blocks.py:
the senders' relay replies and the intake's DSNs, in `sending_blocks`). Nobody saw it but
the sender's log. Here a timer per object reads the same rows (the tenant's: the object's
namespace names it) every resync interval and writes `status.receiverBlock` (why, until
when, how many blocks, the latest status code) while the block lasts, and removes it after.

Only that field is written, as a merge patch of its own: the kind's controller manages the
status fields it states (operator/conditions.py `status_patch`), so neither undoes the other.
Shared-pool servers (in the platform namespace) carry several tenants' mail, each tenant's
blocks in its own rows: they are not shown here.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import kopf

from penguinmails.api.v1alpha1 import API_GROUP, API_VERSION
from penguinmails.api.v1alpha1.common import ReceiverBlock
from penguinmails.common.db import tenant_connection
from penguinmails.common.db.blocks import (
    BLOCK_PAUSE_SECONDS,
    BLOCK_WINDOW_SECONDS,
    BlockScope,
    Strikes,
    active_block,
)
from penguinmails.common.db.tenants import get_tenant
from penguinmails.common.settings import OperatorSettings
from penguinmails.operator.context import Context
from penguinmails.operator.tenant_resources import NAMESPACE_PREFIX

__all__ = ["FIELD", "describe", "register"]

FIELD = "receiverBlock"
KINDS = (("smtpservers", BlockScope.SERVER), ("sendingdomains", BlockScope.DOMAIN))


def describe(found: Strikes) -> dict[str, Any]:
    """The status field for a block now in force."""
    assert found.at is not None
    server = found.scope == BlockScope.SERVER
    what = "this server's address" if server else "this domain"
    why = "policy or reputation" if server else "policy, reputation or authentication"
    status = f" ({found.status})" if found.status else ""
    block = ReceiverBlock(
        reason=(
            f"receivers refused {found.count} messages{status} within "
            f"{BLOCK_WINDOW_SECONDS / 60:.0f} minutes, blocking {what} ({why}); senders "
            "skip it until then"
        ),
        until=(found.at + timedelta(seconds=BLOCK_PAUSE_SECONDS)).replace(microsecond=0),
        strikes=found.count,
        last_status=found.status,
    )
    return block.model_dump(by_alias=True, mode="json", exclude_none=True)


async def _target(ctx: Context, body: kopf.Body, scope: BlockScope) -> tuple[Any, str] | None:
    """(the tenant's id, the block's target) of a tenant's object, None for others."""
    namespace = body.metadata.namespace or ""
    if not namespace.startswith(NAMESPACE_PREFIX):
        return None
    tenant = await get_tenant(ctx.db, namespace.removeprefix(NAMESPACE_PREFIX))
    if tenant is None or tenant.deleted:
        return None
    if scope == BlockScope.SERVER:
        return tenant.id, str(body.metadata.name)
    domain = str((body.get("spec") or {}).get("domain") or "").rstrip(".").lower()
    return (tenant.id, domain) if domain else None


async def show(ctx: Context, body: kopf.Body, patch: kopf.Patch, scope: BlockScope) -> None:
    found_target = await _target(ctx, body, scope)
    if found_target is None:
        return
    tenant_id, target = found_target
    async with tenant_connection(ctx.db, tenant_id) as conn:
        found = await active_block(conn, scope, target)
    desired = describe(found) if found is not None else None
    if (body.get("status") or {}).get(FIELD) != desired:
        patch.status[FIELD] = desired  # None removes it (merge patch)


def register(registry: kopf.OperatorRegistry, config: OperatorSettings) -> None:
    """A timer per SmtpServer and SendingDomain, at the resync interval."""
    for plural, scope in KINDS:
        _register(registry, plural, scope, config.resync_seconds)


def _register(
    registry: kopf.OperatorRegistry, plural: str, scope: BlockScope, interval: float
) -> None:
    @kopf.timer(
        API_GROUP,
        API_VERSION,
        plural,
        registry=registry,
        id=f"{plural}-receiver-block",
        interval=interval,
    )
    async def receiver_block(
        *, body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any
    ) -> None:
        await show(memo.context, body, patch, scope)
