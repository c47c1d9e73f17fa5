"""PostgreSQL schema, migrations, row-level security and tenant lifecycle; the Redis fixture.

Runs against the session PostgreSQL and Redis of tests/conftest.py (private instances, or
PM_DATABASE_URL / PM_REDIS_URL).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from penguinmails.common.db import APP_ROLE, TENANT_SETTING, tenant_connection, tenant_scope
from penguinmails.common.db.migrate import (
    MIGRATION_LOCK_KEY,
    Migration,
    MigrationError,
    load_migrations,
    migrate,
)
from penguinmails.common.db.tenants import (
    TENANT_DATA_RETENTION,
    get_tenant,
    mark_tenant_deleted,
    purge_expired_tenants,
    upsert_tenant,
)
from penguinmails.devstack import postgres as pg_module
from penguinmails.devstack import redis as redis_module
from penguinmails.devstack.ports import free_port
from penguinmails.devstack.postgres import PostgresError, PostgresServer
from penguinmails.devstack.redis import RedisError, RedisServer

pytestmark = pytest.mark.integration

TENANT_TABLES = ("tenant_audit_events", "contact_lists", "contacts")


# -- helpers ----------------------------------------------------------------------------------


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def _new_tenant(pool: asyncpg.Pool, prefix: str = "t") -> tuple[str, uuid.UUID]:
    name = _unique(prefix)
    tenant_id = await upsert_tenant(
        pool,
        name=name,
        tier="starter",
        namespace=f"pm-{name}",
        display_name=f"Tenant {name}",
        contact_email=f"ops@{name}.example",
        suspended=False,
    )
    return name, tenant_id


async def _add_contact(pool: asyncpg.Pool, tenant_id: uuid.UUID, list_name: str) -> uuid.UUID:
    """A list with one contact and one audit event, written under the tenant's scope."""
    async with tenant_connection(pool, tenant_id) as conn:
        list_id = await conn.fetchval(
            "INSERT INTO contact_lists (name) VALUES ($1) RETURNING id", list_name
        )
        await conn.execute(
            "INSERT INTO contacts (list_id, email, fields) VALUES ($1, $2, $3::jsonb)",
            list_id,
            f"someone@{list_name}.example",
            '{"first_name": "Ada"}',
        )
        await conn.execute(
            "INSERT INTO tenant_audit_events (kind, message) VALUES ('ListCreated', $1)",
            list_name,
        )
    assert isinstance(list_id, uuid.UUID)
    return list_id


async def _owned_row_counts(pool: asyncpg.Pool, tenant_id: uuid.UUID) -> dict[str, int]:
    """Rows per tenant-owned table, counted as the session's superuser (bypasses RLS)."""
    counts: dict[str, int] = {}
    for table in TENANT_TABLES:
        counts[table] = await pool.fetchval(
            f"SELECT count(*) FROM {table} WHERE tenant_id = $1",  # noqa: S608
            tenant_id,
        )
    return counts


async def _is_superuser(pool: asyncpg.Pool) -> bool:
    return bool(
        await pool.fetchval(
            "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
        )
    )


@pytest_asyncio.fixture(loop_scope="session")
async def fresh_database(db_pool: asyncpg.Pool, postgres_dsn: str) -> AsyncIterator[str]:
    """DSN of a new, empty database in the same cluster; dropped afterwards."""
    name = f"pm_test_{uuid.uuid4().hex[:12]}"
    try:
        await db_pool.execute(f'CREATE DATABASE "{name}"')
    except asyncpg.InsufficientPrivilegeError:
        pytest.skip("the database user may not create databases")
    try:
        yield urlsplit(postgres_dsn)._replace(path=f"/{name}").geturl()
    finally:
        await db_pool.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- migrations -------------------------------------------------------------------------------


async def test_migrations_apply_once_then_are_idempotent(fresh_database: str) -> None:
    expected = [m.name for m in load_migrations()]
    assert expected and expected[0] == "0001_initial"

    assert await migrate(fresh_database) == expected
    assert await migrate(fresh_database) == []

    conn = await asyncpg.connect(fresh_database)
    try:
        recorded = await conn.fetch("SELECT name, checksum FROM schema_migrations ORDER BY name")
        tables = {
            row["tablename"]
            for row in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        }
    finally:
        await conn.close()
    assert [(r["name"], r["checksum"]) for r in recorded] == [
        (m.name, m.checksum) for m in load_migrations()
    ]
    assert {"tenants", "schema_migrations", *TENANT_TABLES} <= tables


async def test_concurrent_migrations_apply_each_file_exactly_once(
    fresh_database: str, db_pool: asyncpg.Pool
) -> None:
    expected = [m.name for m in load_migrations()]
    database = urlsplit(fresh_database).path.lstrip("/")
    holder = await asyncpg.connect(fresh_database)
    try:
        # Hold the migration lock so both runners are provably waiting on it at the same time,
        # then let them race.
        async with holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
            runners = [asyncio.create_task(migrate(fresh_database)) for _ in range(2)]
            waiting = 0
            async with asyncio.timeout(20):
                while waiting < 2:
                    waiting = await db_pool.fetchval(
                        """
                        SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
                        WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = $1
                        """,
                        database,
                    )
                    await asyncio.sleep(0.01)
        first, second = await asyncio.gather(*runners)
        recorded = await holder.fetchval("SELECT count(*) FROM schema_migrations")
    finally:
        await holder.close()

    assert sorted(first + second) == expected  # every file applied, by exactly one of them
    assert not set(first) & set(second)
    assert recorded == len(expected)
    assert await migrate(fresh_database) == []


async def test_failing_migration_leaves_nothing_behind(fresh_database: str) -> None:
    good = load_migrations()
    broken = Migration("9999_broken", "CREATE TABLE half_done (id int);\nSELECT 1 / 0;\n")
    with pytest.raises(asyncpg.DivisionByZeroError):
        await migrate(fresh_database, migrations=[*good, broken])

    conn = await asyncpg.connect(fresh_database)
    try:
        assert await conn.fetchval("SELECT to_regclass('half_done')") is None
        names = [r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")]
    finally:
        await conn.close()
    assert sorted(names) == [m.name for m in good]  # the good ones stay applied


async def test_edited_migration_is_refused(fresh_database: str) -> None:
    await migrate(fresh_database)
    first = load_migrations()[0]
    edited = Migration(first.name, first.sql + "\n-- edited after release\n")
    with pytest.raises(MigrationError, match=first.name):
        await migrate(fresh_database, migrations=[edited])


def test_migrate_cli(fresh_database: str) -> None:
    command = [sys.executable, "-m", "penguinmails.common.db.migrate", fresh_database]
    first = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert first.returncode == 0, first.stderr
    assert "0001_initial" in first.stdout
    again = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stdout


# -- row-level security -----------------------------------------------------------------------

# Platform-owned tables that name a tenant without being the tenant's data: tenant_roles (login ->
# tenant, migration 0003) and the customer API's accounts (0005, granted to penguinmails_api only).
PLATFORM_ONLY_TABLES = (
    "tenant_roles",
    "users",
    "memberships",
    "token_families",
    "refresh_tokens",
    "api_keys",
    # The account plane (migration 0010), like memberships: the API's login only.
    "tenant_security",
    "invitations",
    # Strikes against shared-pool servers from every tenant (0014): the platform's logins only.
    "pool_server_strikes",
)


async def test_every_tenant_owned_table_is_under_forced_rls(db_pool: asyncpg.Pool) -> None:
    rows = await db_pool.fetch(
        """
        SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
               (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) AS policies
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
        WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
        """
    )
    found = {row["relname"] for row in rows}
    assert set(TENANT_TABLES) <= found
    # They are the platform's alone: no grant at all to the app role or the tenants' logins.
    for table in PLATFORM_ONLY_TABLES:
        for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE"):
            for grantee in (APP_ROLE, "penguinmails_tenant"):
                assert not await db_pool.fetchval(
                    "SELECT has_table_privilege($1, $2, $3)", grantee, table, privilege
                ), (grantee, table, privilege)
    unprotected = [
        row["relname"]
        for row in rows
        if row["relname"] not in PLATFORM_ONLY_TABLES
        and not (row["relrowsecurity"] and row["relforcerowsecurity"] and row["policies"] > 0)
    ]
    assert unprotected == [], "tables with tenant_id but without forced row-level security"

    role = await db_pool.fetchrow(
        "SELECT rolsuper, rolbypassrls, rolcanlogin FROM pg_roles WHERE rolname = $1", APP_ROLE
    )
    assert role is not None
    assert not role["rolsuper"] and not role["rolbypassrls"] and not role["rolcanlogin"]


async def test_tenants_only_see_and_write_their_own_rows(db_pool: asyncpg.Pool) -> None:
    a_name, a = await _new_tenant(db_pool, "rls-a")
    _, b = await _new_tenant(db_pool, "rls-b")
    list_a = await _add_contact(db_pool, a, "news")
    list_b = await _add_contact(db_pool, b, "news")  # same list name: unique per tenant only

    async with tenant_connection(db_pool, a) as conn:
        assert await conn.fetchval("SELECT current_user") == APP_ROLE
        lists = await conn.fetch("SELECT id, tenant_id FROM contact_lists")
        assert [(r["id"], r["tenant_id"]) for r in lists] == [(list_a, a)]
        contacts = await conn.fetch("SELECT tenant_id, list_id FROM contacts")
        assert [(r["tenant_id"], r["list_id"]) for r in contacts] == [(a, list_a)]
        events = await conn.fetch("SELECT tenant_id FROM tenant_audit_events")
        assert [r["tenant_id"] for r in events] == [a]
        assert await conn.fetchval("SELECT id FROM contact_lists WHERE id = $1", list_b) is None
        # Writes aimed at B's rows find nothing.
        assert await conn.execute(
            "UPDATE contacts SET fields = '{}' WHERE list_id = $1", list_b
        ) == ("UPDATE 0")
        assert await conn.execute("DELETE FROM contact_lists WHERE id = $1", list_b) == "DELETE 0"
        # Its own tenant row, and no other.
        assert [r["name"] for r in await conn.fetch("SELECT name FROM tenants")] == [a_name]

    # A cannot create rows for B ...
    for statement, args in (
        ("INSERT INTO contact_lists (tenant_id, name) VALUES ($1, 'stolen')", (b,)),
        ("INSERT INTO tenant_audit_events (tenant_id, kind, message) VALUES ($1, 'x', 'y')", (b,)),
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            async with tenant_connection(db_pool, a) as conn:
                await conn.execute(statement, *args)
    # ... nor attach a contact of its own to B's list (composite foreign key) ...
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        async with tenant_connection(db_pool, a) as conn:
            await conn.execute(
                "INSERT INTO contacts (list_id, email) VALUES ($1, 'x@y.example')", list_b
            )
    # ... nor move its rows to B, change tenants, or rewrite its audit trail.
    for statement in (
        "UPDATE contact_lists SET tenant_id = $1",
        "UPDATE tenants SET suspended = false WHERE id = $1",
        "DELETE FROM tenant_audit_events WHERE tenant_id <> $1",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            async with tenant_connection(db_pool, a) as conn:
                await conn.execute(statement, b)

    # B's data is untouched (counted as the superuser).
    assert await _owned_row_counts(db_pool, b) == {
        "tenant_audit_events": 1,
        "contact_lists": 1,
        "contacts": 1,
    }


async def test_without_a_tenant_setting_nothing_is_visible(db_pool: asyncpg.Pool) -> None:
    _, tenant = await _new_tenant(db_pool, "rls-none")
    await _add_contact(db_pool, tenant, "unscoped")

    async with db_pool.acquire() as conn:
        # A connection that never had the setting: current_setting(..., true) is NULL.
        async with conn.transaction():
            await conn.execute(f"SET LOCAL ROLE {APP_ROLE}")
            assert await conn.fetchval("SELECT count(*) FROM contacts") == 0
            assert await conn.fetchval("SELECT count(*) FROM tenants") == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            async with conn.transaction():
                await conn.execute(f"SET LOCAL ROLE {APP_ROLE}")
                await conn.execute(
                    "INSERT INTO contact_lists (tenant_id, name) VALUES ($1, 'x')", tenant
                )

        # After a scope ended the setting reads '' (not NULL); that must still match nothing
        # rather than fail on ''::uuid.
        async with tenant_scope(conn, tenant):
            assert await conn.fetchval("SELECT count(*) FROM contacts") == 1
        assert await conn.fetchval("SELECT current_setting($1, true)", TENANT_SETTING) == ""
        async with conn.transaction():
            await conn.execute(f"SET LOCAL ROLE {APP_ROLE}")
            assert await conn.fetchval("SELECT count(*) FROM contacts") == 0


async def test_superuser_bypasses_rls_so_app_code_must_use_the_scope(
    db_pool: asyncpg.Pool,
) -> None:
    if not await _is_superuser(db_pool):
        pytest.skip("PM_DATABASE_URL does not connect as a superuser")
    _, a = await _new_tenant(db_pool, "bypass-a")
    _, b = await _new_tenant(db_pool, "bypass-b")
    await _add_contact(db_pool, a, "one")
    await _add_contact(db_pool, b, "two")
    seen = await db_pool.fetchval(
        "SELECT count(DISTINCT tenant_id) FROM contacts WHERE tenant_id = ANY($1::uuid[])", [a, b]
    )
    assert seen == 2


async def test_tenant_scope_ends_with_its_transaction(db_pool: asyncpg.Pool) -> None:
    _, tenant = await _new_tenant(db_pool, "scope")
    async with db_pool.acquire() as conn:
        session_user = await conn.fetchval("SELECT current_user")
        with pytest.raises(ZeroDivisionError):
            async with tenant_scope(conn, str(tenant)):
                await conn.execute("INSERT INTO contact_lists (name) VALUES ('rolled-back')")
                raise ZeroDivisionError
        assert await conn.fetchval("SELECT current_user") == session_user
        assert not await conn.fetchval("SELECT current_setting($1, true) <> ''", TENANT_SETTING)
        assert await _owned_row_counts(db_pool, tenant) == dict.fromkeys(TENANT_TABLES, 0)

        async with conn.transaction():
            with pytest.raises(RuntimeError, match="own transaction"):
                async with tenant_scope(conn, tenant):
                    pass


# -- tenant lifecycle -------------------------------------------------------------------------


async def test_upsert_is_idempotent_and_updates_in_place(db_pool: asyncpg.Pool) -> None:
    name, tenant_id = await _new_tenant(db_pool, "upsert")
    before = await get_tenant(db_pool, name)
    assert before is not None and before.id == tenant_id and not before.deleted
    assert (before.tier, before.namespace, before.suspended) == ("starter", f"pm-{name}", False)

    same = await upsert_tenant(
        db_pool,
        name=name,
        tier="starter",
        namespace=f"pm-{name}",
        display_name=f"Tenant {name}",
        contact_email=f"ops@{name}.example",
        suspended=False,
    )
    assert same == tenant_id
    assert await get_tenant(db_pool, name) == before  # nothing written, updated_at unchanged

    changed = await upsert_tenant(
        db_pool,
        name=name,
        tier="growth",
        namespace=f"pm-{name}",
        display_name=None,
        contact_email=f"billing@{name}.example",
        suspended=True,
    )
    after = await get_tenant(db_pool, name)
    assert changed == tenant_id and after is not None
    assert (after.tier, after.display_name, after.contact_email, after.suspended) == (
        "growth",
        None,
        f"billing@{name}.example",
        True,
    )
    assert after.created_at == before.created_at
    assert after.updated_at > before.updated_at


async def test_two_live_tenants_cannot_share_a_namespace(db_pool: asyncpg.Pool) -> None:
    name, _ = await _new_tenant(db_pool, "ns")
    with pytest.raises(asyncpg.UniqueViolationError):
        await upsert_tenant(
            db_pool,
            name=_unique("ns-other"),
            tier="starter",
            namespace=f"pm-{name}",
            display_name=None,
            contact_email="x@example.com",
            suspended=False,
        )


async def test_deleted_tenant_is_kept_until_purge_after(db_pool: asyncpg.Pool) -> None:
    name, tenant_id = await _new_tenant(db_pool, "purge")
    await _add_contact(db_pool, tenant_id, "kept")
    _, bystander = await _new_tenant(db_pool, "purge-live")
    await _add_contact(db_pool, bystander, "live")

    assert await mark_tenant_deleted(db_pool, name, TENANT_DATA_RETENTION)
    marked = await get_tenant(db_pool, name)
    assert marked is not None and marked.deleted
    assert marked.deleted_at is not None and marked.purge_after is not None
    assert marked.purge_after - marked.deleted_at == TENANT_DATA_RETENTION

    # Deleting again (the operator's handler may run twice) does not extend the retention.
    assert await mark_tenant_deleted(db_pool, name, timedelta(days=365))
    again = await get_tenant(db_pool, name)
    assert again is not None
    assert (again.deleted_at, again.purge_after) == (marked.deleted_at, marked.purge_after)

    # Within retention: nothing is purged, the data is all there.
    kept = {"tenant_audit_events": 1, "contact_lists": 1, "contacts": 1}
    assert name not in await purge_expired_tenants(db_pool)
    assert name not in await purge_expired_tenants(
        db_pool, now=marked.purge_after - timedelta(seconds=1)
    )
    assert await _owned_row_counts(db_pool, tenant_id) == kept

    # At purge_after: the tenant and everything it owned are gone; others are untouched.
    purged = await purge_expired_tenants(db_pool, now=marked.purge_after)
    assert name in purged
    assert await get_tenant(db_pool, name) is None
    assert await _owned_row_counts(db_pool, tenant_id) == dict.fromkeys(TENANT_TABLES, 0)
    assert await _owned_row_counts(db_pool, bystander) == kept
    assert name not in await purge_expired_tenants(db_pool, now=marked.purge_after)


async def test_recreated_tenant_is_undeleted_with_its_data(db_pool: asyncpg.Pool) -> None:
    name, tenant_id = await _new_tenant(db_pool, "undelete")
    await _add_contact(db_pool, tenant_id, "precious")
    assert await mark_tenant_deleted(db_pool, name, timedelta(days=1))
    marked = await get_tenant(db_pool, name)
    assert marked is not None and marked.purge_after is not None

    assert (await _new_tenant_named(db_pool, name)) == tenant_id
    restored = await get_tenant(db_pool, name)
    assert restored is not None
    assert not restored.deleted and restored.purge_after is None

    assert name not in await purge_expired_tenants(
        db_pool, now=marked.purge_after + timedelta(days=1)
    )
    assert await _owned_row_counts(db_pool, tenant_id) == {
        "tenant_audit_events": 1,
        "contact_lists": 1,
        "contacts": 1,
    }


async def _new_tenant_named(pool: asyncpg.Pool, name: str) -> uuid.UUID:
    return await upsert_tenant(
        pool,
        name=name,
        tier="starter",
        namespace=f"pm-{name}",
        display_name=f"Tenant {name}",
        contact_email=f"ops@{name}.example",
        suspended=False,
    )


async def test_lifecycle_argument_checks(db_pool: asyncpg.Pool) -> None:
    assert not await mark_tenant_deleted(db_pool, _unique("missing"), TENANT_DATA_RETENTION)
    with pytest.raises(ValueError, match="negative"):
        await mark_tenant_deleted(db_pool, "whatever", timedelta(seconds=-1))
    with pytest.raises(ValueError, match="timezone"):
        await purge_expired_tenants(db_pool, now=datetime(2030, 1, 1))
    assert await get_tenant(db_pool, _unique("missing")) is None


# -- redis ------------------------------------------------------------------------------------


async def test_redis_set_get(
    redis_url: str, redis_server: RedisServer | redis_module.ExistingRedis
) -> None:
    client = aioredis.from_url(redis_url, decode_responses=True)
    try:
        key = _unique("pm-test")
        assert await client.set(key, "hello", ex=60)
        assert await client.get(key) == "hello"
        assert await client.incr(f"{key}:n") == 1
        if isinstance(redis_server, RedisServer):
            assert await client.config_get("save") == {"save": ""}
            assert await client.config_get("appendonly") == {"appendonly": "no"}
    finally:
        await client.aclose()


# -- the launchers themselves -----------------------------------------------------------------


@pytest.fixture
def base_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pm-launcher-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _pid_gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


def _require_postgres() -> None:
    try:
        pg_module.find_pg_bin()
    except PostgresError as exc:
        pytest.skip(str(exc))


async def test_postgres_server_restarts_with_its_data_and_stops_cleanly(base_dir: Path) -> None:
    _require_postgres()
    server = PostgresServer(base_dir)
    with server:
        assert server.started_in > 0
        first_pid, dsn = server.pid, server.dsn
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT current_database()") == "penguinmails"
            assert await conn.fetchval("SHOW fsync") == "off"
            await conn.execute("CREATE TABLE survives (x int)")
        finally:
            await conn.close()
    assert first_pid is not None and _pid_gone(first_pid)
    assert not (server.data_dir / "postmaster.pid").exists()  # clean (fast) shutdown

    with server:  # restart: same port and data directory, no initdb
        assert server.dsn == dsn
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT to_regclass('survives') IS NOT NULL")
        finally:
            await conn.close()
    server.stop()  # idempotent


def test_postgres_start_failure_reports_the_log_and_leaves_no_process(base_dir: Path) -> None:
    _require_postgres()
    server = PostgresServer(base_dir, settings={"shared_buffers": "lots"})
    with pytest.raises(PostgresError, match="shared_buffers") as failure:
        server.start()
    assert "last lines of" in str(failure.value)
    assert server.pid is None and not server.running


def _occupied_port() -> tuple[socket.socket, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, int(sock.getsockname()[1])


def test_redis_server_retries_a_taken_port_and_refuses_a_requested_one(
    base_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    try:
        redis_module.find_redis_server()
    except RedisError as exc:
        pytest.skip(str(exc))
    blocker, taken = _occupied_port()
    with blocker:
        ports = iter([taken])
        monkeypatch.setattr(
            redis_module, "free_port", lambda host: next(ports, None) or free_port(host)
        )
        with RedisServer(base_dir) as server:
            assert server.port != taken
            pid = server.pid
        assert pid is not None and _pid_gone(pid)

        with pytest.raises(RedisError, match="Address already in use"):
            RedisServer(base_dir / "fixed", port=taken).start()
