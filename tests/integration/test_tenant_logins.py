"""A tenant's PostgreSQL login through its life: created, kept in shape, disabled, dropped."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import asyncpg
import pytest
import pytest_asyncio

from penguinmails.common.db.migrate import migrate
from penguinmails.common.db.tenant_logins import (
    connection_limit,
    ensure_tenant_login,
    new_password,
    with_login,
)
from penguinmails.common.db.tenants import mark_tenant_deleted, purge_expired_tenants
from tests.integration.sender_support import tenant_row

pytestmark = pytest.mark.integration


async def new_tenant(pool: asyncpg.Pool) -> tuple[str, uuid.UUID]:
    name = f"login-{uuid.uuid4().hex[:8]}"
    tenant_id = await tenant_row(pool, name)
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
        "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcanlogin, rolconnlimit FROM pg_roles "
        "WHERE rolname = $1",
        role,
    )
    assert row is not None and tuple(row) == (False, False, False, True, connection_limit(1))
    groups = await db_pool.fetch(
        "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
        "JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = $1",
        role,
    )
    assert [g["rolname"] for g in groups] == ["penguinmails_tenant"]
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


@pytest_asyncio.fixture(loop_scope="session")
async def platform_dsn(db_pool: asyncpg.Pool, postgres_dsn: str) -> AsyncIterator[str]:
    """A database owned by a platform login as production has it: LOGIN CREATEROLE, nothing
    more (no superuser, no BYPASSRLS); dropped afterwards."""
    suffix = uuid.uuid4().hex[:10]
    login, database, password = f"pm_platform_{suffix}", f"pm_prod_{suffix}", new_password()
    await db_pool.execute(f"CREATE ROLE {login} LOGIN CREATEROLE PASSWORD '{password}'")
    await db_pool.execute(f"CREATE DATABASE {database} OWNER {login}")
    dsn = with_login(postgres_dsn, login, password)
    try:
        yield urlsplit(dsn)._replace(path=f"/{database}").geturl()
    finally:
        await db_pool.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        await db_pool.execute(f"DROP ROLE IF EXISTS {login}")


async def test_a_platform_login_without_superuser_runs_the_whole_lifecycle(
    platform_dsn: str,
) -> None:
    """Migrations, the tenant's login (created, re-asserted, disabled, dropped) and isolation,
    all as the production platform login."""
    assert await migrate(platform_dsn)
    pool = await asyncpg.create_pool(platform_dsn, min_size=1, max_size=2)
    try:
        assert not await pool.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        name, tenant_id = await new_tenant(pool)
        _, other = await new_tenant(pool)
        password = new_password()
        role = await ensure_tenant_login(pool, tenant_id, password)
        assert await ensure_tenant_login(pool, tenant_id, password) == role
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT set_config('role', 'penguinmails_app', true), "
                "set_config('penguinmails.tenant_id', $1, true)",
                str(other),
            )
            await conn.execute("INSERT INTO contact_lists (name) VALUES ('other')")
        tenant = await asyncpg.connect(with_login(platform_dsn, role, password))
        try:
            assert await tenant.fetchval("SELECT current_tenant_id()") == tenant_id
            assert await tenant.fetch("SELECT * FROM contact_lists") == []
        finally:
            await tenant.close()
        assert await mark_tenant_deleted(pool, name, timedelta(days=1))
        await purge_expired_tenants(pool, datetime.now(UTC) + timedelta(days=2))
        assert await pool.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = $1", role) == 0
    finally:
        await pool.close()
