"""Receivers' blocks, as the SmtpServer and SendingDomain controllers observe and show them
(issue 10).

Senders skip a server (or a domain's mail) that receivers blocked `BLOCK_STRIKES` times within
`BLOCK_WINDOW_SECONDS`, for `BLOCK_PAUSE_SECONDS` after the last block (common/db/blocks.py:
the senders' relay replies and the intake's DSNs, in `sending_blocks`). Each of the two
controllers reads the object's active block (one query, in the tenant's scope: the object's
namespace names the tenant) in its own pass, under the object's lock, and states
`status.receiverBlock` (why, until when, how many blocks, the latest status code) through its
status writer while the block lasts; the writer removes the field once it is no longer stated.

How often: on every change of the object, and on timer passes once per resync interval
(`Checks`), the cadence the blocks were shown at before; a SendingDomain whose DNS is not due
runs a pass for the block alone.

Shared-pool servers (SmtpServers of the platform namespace labelled
`penguinmails.io/pool=shared`) carry several tenants' mail: the SmtpServer controller
registers them (`pool_server`), so that a strike from any tenant counts against them, and
shows the block counted over every tenant; it forgets them when unlabelled or deleted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from penguinmails.api.v1alpha1.common import ReceiverBlock
from penguinmails.common.db import tenant_connection
from penguinmails.common.db.blocks import (
    BLOCK_PAUSE_SECONDS,
    BLOCK_WINDOW_SECONDS,
    BlockScope,
    Strikes,
    active_block,
    forget_pool_server,
    pool_server_block,
    register_pool_server,
)
from penguinmails.common.db.tenants import TenantRow, get_tenant
from penguinmails.operator.clock import Clock
from penguinmails.operator.context import Context
from penguinmails.operator.controller import Pass
from penguinmails.operator.tenant_resources import NAMESPACE_PREFIX

__all__ = ["FIELD", "Checks", "decide", "forget", "observe", "pool_server", "show", "tenant_of"]

FIELD = "receiverBlock"


def decide(found: Strikes | None, now: datetime) -> dict[str, Any] | None:
    """`status.receiverBlock` for the block observed (pure): None (the field goes) when there
    is none, or when the one observed has ended by `now` (the pass's clock)."""
    if found is None or found.at is None:
        return None
    until = found.at + timedelta(seconds=BLOCK_PAUSE_SECONDS)
    if until <= now:
        return None
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
        until=until.replace(microsecond=0),
        strikes=found.count,
        last_status=found.status,
    )
    return block.model_dump(by_alias=True, mode="json", exclude_none=True)


async def tenant_of(ctx: Context, namespace: str) -> TenantRow | None:
    """The live tenant whose namespace this is; None outside tenants' namespaces."""
    if not namespace.startswith(NAMESPACE_PREFIX):
        return None
    tenant = await get_tenant(ctx.db, namespace.removeprefix(NAMESPACE_PREFIX))
    return None if tenant is None or tenant.deleted else tenant


async def observe(
    ctx: Context, tenant: TenantRow | None, scope: BlockScope, target: str
) -> Strikes | None:
    """The block in force on one server (its name) or domain of the tenant, if any."""
    if tenant is None or not target:
        return None
    async with tenant_connection(ctx.db, tenant.id) as conn:
        return await active_block(conn, scope, target)


class Checks:
    """When a timer pass reads the block again: once per `interval` per object (a change
    always reads it). In memory: a restarted operator reads every block at its resume."""

    def __init__(self, clock: Clock, interval: float) -> None:
        self._clock = clock
        self._interval = interval
        self._last: dict[str, float] = {}

    def due(self, uid: str) -> bool:
        last = self._last.get(uid)
        return last is None or self._clock.monotonic() - last >= self._interval

    def checked(self, uid: str) -> None:
        self._last[uid] = self._clock.monotonic()

    def forget(self, uid: str) -> None:
        self._last.pop(uid, None)


async def pool_server(ctx: Context, name: str, shared: bool) -> Strikes | None:
    """A server of the platform namespace: registered as a shared-pool server while it is
    labelled one (so that every tenant's strikes against it count, common/db/blocks.py) and
    forgotten when not, and its block counted over every tenant (the platform's login,
    outside any tenant scope)."""
    async with ctx.db.acquire() as conn:
        if not shared:
            await forget_pool_server(conn, name)
            return None
        await register_pool_server(conn, name)
        return await pool_server_block(conn, name)


async def forget(ctx: Context, name: str) -> None:
    """A deleted shared-pool server: its strikes go with it."""
    async with ctx.db.acquire() as conn:
        await forget_pool_server(conn, name)


DATABASE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


async def show(
    run: Pass[Any, Any], checks: Checks, read: Callable[[], Awaitable[Strikes | None]]
) -> None:
    """Observe the object's block (`read`) and state it through the pass's status writer, at
    once and only when it changed: it shows even when the rest of the pass fails or waits.
    Without the database the block cannot be known, and the rest of the pass (DNS, the
    provider) does not need it: the field stays as it was and is read again next pass,
    rather than failing the object (which would make it not Ready, and back off)."""
    try:
        found = await read()
    except DATABASE_ERRORS as error:
        run.logger.warning(
            "%s: receivers' block not read (%s: %s); shown as it was until the next pass",
            run.name,
            type(error).__name__,
            error,
        )
        return
    shown = decide(found, run.now)
    checks.checked(run.uid)
    if run.status.current.get(FIELD) != shown:
        await run.status.write(receiverBlock=shown)
