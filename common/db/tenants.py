"""The platform's record of tenants, as the operator keeps it in step with `Tenant` resources.

A deleted `Tenant` is only marked: `deleted_at` and `purge_after` are set, and the row with all
tenant-owned data that references it stays for `TENANT_DATA_RETENTION` (30 days by default), so
a tenant deleted by mistake and created again under the same name gets its data back. Once
`purge_after` has passed, `purge_expired_tenants()` hard-deletes the row, and the foreign keys
(`ON DELETE CASCADE`) delete everything the tenant owned.

These functions run as the platform (the pool's login, which owns the schema), outside any
tenant scope: `tenants` is not forced under row-level security for its owner.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

log = logging.getLogger(__name__)

__all__ = [
    "TENANT_DATA_RETENTION",
    "TenantRow",
    "get_tenant",
    "mark_tenant_deleted",
    "purge_expired_tenants",
    "upsert_tenant",
]

TENANT_DATA_RETENTION = timedelta(days=30)
"""How long a deleted tenant's row and data are kept before `purge_expired_tenants()` drops them.

Long enough to undo a mistaken deletion (re-create the Tenant with the same name), short enough
that a customer who left is really gone within a month of asking.
"""


@dataclass(frozen=True)
class TenantRow:
    """One row of `tenants`; timestamps are timezone-aware (UTC)."""

    id: uuid.UUID
    name: str
    tier: str
    namespace: str
    display_name: str | None
    contact_email: str
    suspended: bool
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    purge_after: datetime | None

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None


_COLUMNS = (
    "id, name, tier, namespace, display_name, contact_email, suspended, "
    "created_at, updated_at, deleted_at, purge_after"
)

# Writes only when something differs, so the operator's periodic reconcile neither bumps
# updated_at nor leaves dead row versions behind. When nothing differs, RETURNING is empty.
_UPSERT = """
INSERT INTO tenants AS t (name, tier, namespace, display_name, contact_email, suspended)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (name) DO UPDATE SET
    tier = EXCLUDED.tier,
    namespace = EXCLUDED.namespace,
    display_name = EXCLUDED.display_name,
    contact_email = EXCLUDED.contact_email,
    suspended = EXCLUDED.suspended,
    deleted_at = NULL,
    purge_after = NULL
WHERE (t.tier, t.namespace, t.display_name, t.contact_email, t.suspended,
       t.deleted_at, t.purge_after)
    IS DISTINCT FROM
      (EXCLUDED.tier, EXCLUDED.namespace, EXCLUDED.display_name, EXCLUDED.contact_email,
       EXCLUDED.suspended, NULL::timestamptz, NULL::timestamptz)
RETURNING id
"""

# Only a live tenant is marked, so repeating the deletion never pushes purge_after further out.
_MARK_DELETED = """
WITH marked AS (
    UPDATE tenants
    SET deleted_at = now(), purge_after = now() + $2::interval
    WHERE name = $1 AND deleted_at IS NULL
    RETURNING id
)
SELECT EXISTS (SELECT FROM marked) OR EXISTS (SELECT FROM tenants WHERE name = $1)
"""

_PURGE = """
WITH purged AS (
    DELETE FROM tenants
    WHERE purge_after IS NOT NULL AND purge_after <= COALESCE($1::timestamptz, now())
    RETURNING id, name
)
SELECT p.name, r.role_name FROM purged p LEFT JOIN tenant_roles r ON r.tenant_id = p.id
"""


async def upsert_tenant(
    pool: asyncpg.Pool,
    *,
    name: str,
    tier: str,
    namespace: str,
    display_name: str | None,
    contact_email: str,
    suspended: bool,
) -> uuid.UUID:
    """Create or update the tenant `name`; return its id (stable across updates).

    Idempotent. A tenant marked deleted and created again with the same name is un-deleted
    (`deleted_at`/`purge_after` cleared) and keeps its id and data.
    """
    async with pool.acquire() as conn, conn.transaction():
        tenant_id = await conn.fetchval(
            _UPSERT, name, tier, namespace, display_name, contact_email, suspended
        )
        if tenant_id is None:  # unchanged: the conflicting row is live and locked by us
            tenant_id = await conn.fetchval("SELECT id FROM tenants WHERE name = $1", name)
    if not isinstance(tenant_id, uuid.UUID):
        raise RuntimeError(f"upsert of tenant {name!r} returned no id")
    return tenant_id


async def mark_tenant_deleted(pool: asyncpg.Pool, name: str, retention: timedelta) -> bool:
    """Mark the tenant deleted: `deleted_at = now()`, `purge_after = now() + retention`.

    Keeps the row and its data. Idempotent: a tenant already marked keeps its first timestamps.
    Returns False when there is no tenant with that name, True otherwise.
    """
    if retention < timedelta(0):
        raise ValueError("retention must not be negative")
    result = await pool.fetchval(_MARK_DELETED, name, retention)
    # Its login (migration 0003) stops working at once; the rows it could reach stay.
    role = await pool.fetchval(
        "SELECT r.role_name FROM tenant_roles r JOIN tenants t ON t.id = r.tenant_id "
        "WHERE t.name = $1 AND t.deleted_at IS NOT NULL",
        name,
    )
    if role is not None:
        await pool.execute(f"ALTER ROLE {_quote_ident(str(role))} NOLOGIN")
    return bool(result)


async def get_tenant(pool: asyncpg.Pool, name: str) -> TenantRow | None:
    """The tenant `name`, also when it is marked deleted (see `TenantRow.deleted`)."""
    row = await pool.fetchrow(f"SELECT {_COLUMNS} FROM tenants WHERE name = $1", name)  # noqa: S608
    return TenantRow(**dict(row.items())) if row is not None else None


async def purge_expired_tenants(pool: asyncpg.Pool, now: datetime | None = None) -> list[str]:
    """Hard-delete tenants whose `purge_after` is at or before `now` (default: the database's
    clock), with all their tenant-owned rows; return their names, sorted.

    Tenants that are live, or deleted but still within retention, are never touched.
    """
    if now is not None and now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(_PURGE, now)
        # tenant_roles rows went with the cascade; the logins themselves are cluster objects.
        for role in [row["role_name"] for row in rows if row["role_name"] is not None]:
            try:
                async with conn.transaction():
                    await conn.execute(f"DROP ROLE IF EXISTS {_quote_ident(role)}")
            except asyncpg.PostgresError as error:
                # E.g. it created a large object. Unmapped and NOLOGIN it can reach nothing;
                # a DBA drops it with DROP OWNED BY. The purge itself must not fail for it.
                log.warning("login %s of a purged tenant not dropped: %s", role, error)
    return sorted(row["name"] for row in rows)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
