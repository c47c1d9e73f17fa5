"""A tenant's PostgreSQL login through its life: created, kept in shape, disabled, dropped."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from penguinmails.common.db.tenant_logins import ensure_tenant_login, new_password, with_login
from penguinmails.common.db.tenants import mark_tenant_deleted, purge_expired_tenants, upsert_tenant

pytestmark = pytest.mark.integration


async def new_tenant(pool: asyncpg.Pool) -> tuple[str, uuid.UUID]:
    name = f"login-{uuid.uuid4().hex[:8]}"
    tenant_id = await upsert_tenant(
        pool,
        name=name,
        tier="starter",
        namespace=f"tenant-{name}",
        display_name=None,
        contact_email="ops@example.com",
        suspended=False,
    )
    return name, tenant_id


async def test_login_is_reasserted_and_loses_what_was_added_by_hand(
    db_pool: asyncpg.Pool, postgres_dsn: str
) -> None:
    _, tenant_id = await new_tenant(db_pool)
    password = new_password()
    role = await ensure_tenant_login(db_pool, tenant_id, password)
    # Someone widens it by hand: membership in the platform role, BYPASSRLS.
    await db_pool.execute(f'GRANT penguinmails_platform TO "{role}"')
    await db_pool.execute(f'ALTER ROLE "{role}" BYPASSRLS CREATEROLE')
    assert await ensure_tenant_login(db_pool, tenant_id, password) == role  # the next reconcile
    row = await db_pool.fetchrow(
        "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcanlogin FROM pg_roles "
        "WHERE rolname = $1",
        role,
    )
    assert row is not None and tuple(row) == (False, False, False, True)
    groups = await db_pool.fetch(
        "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
        "JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = $1",
        role,
    )
    assert [g["rolname"] for g in groups] == ["penguinmails_app"]
    conn = await asyncpg.connect(with_login(postgres_dsn, role, password))
    try:
        assert await conn.fetchval("SELECT current_tenant_id()") == tenant_id
    finally:
        await conn.close()


async def test_deleted_tenant_cannot_log_in_and_purge_drops_the_login(
    db_pool: asyncpg.Pool, postgres_dsn: str
) -> None:
    name, tenant_id = await new_tenant(db_pool)
    password = new_password()
    role = await ensure_tenant_login(db_pool, tenant_id, password)
    dsn = with_login(postgres_dsn, role, password)
    await (await asyncpg.connect(dsn)).close()

    assert await mark_tenant_deleted(db_pool, name, timedelta(days=30))
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="not permitted"):
        await asyncpg.connect(dsn)

    assert name in await purge_expired_tenants(db_pool, datetime.now(UTC) + timedelta(days=31))
    assert await db_pool.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = $1", role) == 0
    assert (
        await db_pool.fetchval("SELECT count(*) FROM tenant_roles WHERE role_name = $1", role) == 0
    )
