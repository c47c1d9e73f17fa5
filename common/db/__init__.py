"""PostgreSQL schema and access shared by the operator, the customer API and the sender.

- `migrate` (`penguinmails.common.db.migrate`): applies the SQL files in `migrations/`.
- `tenants` (`penguinmails.common.db.tenants`): the platform's view of tenants.
- `tenant_logins` (`penguinmails.common.db.tenant_logins`): each tenant's own login.
- `tenant_scope()` / `tenant_connection()`: run tenant-owned work under row-level security.

Row-level security only applies to roles that are neither superusers nor BYPASSRLS. The platform
connects as a login that owns the schema; inside `tenant_scope()` the transaction switches to the
role `penguinmails_app` and sets `penguinmails.tenant_id`, so every tenant-owned table shows and
accepts only that tenant's rows. That setting is honoured for the platform's logins only
(members of `penguinmails_platform`): a session logged in as a tenant's own login is that tenant,
whatever it sets (migration 0003). See docs/database.md.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

__all__ = [
    "APP_ROLE",
    "TENANT_SETTING",
    "AnyConnection",
    "tenant_connection",
    "tenant_scope",
]

APP_ROLE = "penguinmails_app"
"""The non-superuser, non-BYPASSRLS role tenant-scoped work runs as (created by migration 0001)."""

TENANT_SETTING = "penguinmails.tenant_id"
"""The transaction-local setting naming the tenant of a platform login's scope (ignored for a
tenant's own login, see `current_tenant_id()` in migration 0003)."""

AnyConnection = asyncpg.Connection | PoolConnectionProxy
_Conn = TypeVar("_Conn", asyncpg.Connection, PoolConnectionProxy)


@asynccontextmanager
async def tenant_scope(conn: _Conn, tenant_id: uuid.UUID | str) -> AsyncIterator[_Conn]:
    """A transaction on `conn` that acts as `penguinmails_app` for one tenant.

        async with tenant_scope(conn, tenant_id):
            await conn.fetch("SELECT * FROM contacts")   # only this tenant's contacts

    Both the role and the tenant are `SET LOCAL`: they end with the transaction (commit when the
    block exits normally, rollback when it raises), so a pooled connection never carries them
    into other work. The scope owns its transaction: calling it inside one is an error, because
    `SET LOCAL` in a savepoint would outlive the block.
    """
    tenant = tenant_id if isinstance(tenant_id, uuid.UUID) else uuid.UUID(str(tenant_id))
    if conn.is_in_transaction():
        raise RuntimeError(
            "tenant_scope() must start its own transaction; it was entered inside one"
        )
    async with conn.transaction():
        # A platform login switches to the app role; a tenant's own login stays itself (it may
        # not become penguinmails_app, and its rows are its own whatever the setting says).
        await conn.execute(
            "SELECT set_config('role', CASE WHEN pg_has_role(session_user, "
            "'penguinmails_platform', 'MEMBER') THEN $1 ELSE 'none' END, true), "
            "set_config($2, $3, true)",
            APP_ROLE,
            TENANT_SETTING,
            str(tenant),
        )
        yield conn


@asynccontextmanager
async def tenant_connection(
    pool: asyncpg.Pool, tenant_id: uuid.UUID | str
) -> AsyncIterator[PoolConnectionProxy]:
    """Acquire a connection from `pool` and open a `tenant_scope()` on it."""
    async with pool.acquire() as conn, tenant_scope(conn, tenant_id):
        yield conn
