"""The audit log against the real PostgreSQL: recorded and listed (filters, time range, cursor
pages) under a tenant's scope, append-only for the application role and the tenants' logins."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from penguinmails.common.db import tenant_connection
from penguinmails.common.db.audit import AuditError, Context, list_entries, record
from penguinmails.common.db.tenant_logins import ensure_tenant_login, new_password, with_login
from penguinmails.common.db.tenants import upsert_tenant

pytestmark = pytest.mark.integration


async def new_tenant(pool: asyncpg.Pool, prefix: str) -> uuid.UUID:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    return await upsert_tenant(
        pool,
        name=name,
        tier="starter",
        namespace=f"tenant-{name}",
        display_name=None,
        contact_email="ops@example.com",
        suspended=False,
    )


@pytest_asyncio.fixture
async def tenant_login(
    db_pool: asyncpg.Pool, postgres_dsn: str
) -> AsyncIterator[tuple[uuid.UUID, asyncpg.Connection]]:
    """A tenant and a connection with its own PostgreSQL login (what its pods hold)."""
    tenant_id = await new_tenant(db_pool, "audit-login")
    password = new_password()
    role = await ensure_tenant_login(db_pool, tenant_id, password)
    conn = await asyncpg.connect(with_login(postgres_dsn, role, password))
    try:
        yield tenant_id, conn
    finally:
        await conn.close()


async def test_entries_are_listed_by_filter_time_range_and_cursor(db_pool: asyncpg.Pool) -> None:
    tenant = await new_tenant(db_pool, "audit")
    other = await new_tenant(db_pool, "audit-other")
    alice = Context("user:alice", "203.0.113.9", "req_1")
    key = Context("api_key:k1", "2001:db8::1", "req_2")
    plan = [
        (alice, "domain.create", "domain:a.example"),
        (key, "campaign.create", "campaign:launch"),
        (alice, "campaign.pause", "campaign:launch"),
        (key, "campaign.resume", "campaign:launch"),
        (alice, "contact.erase", "address:00ff"),
        (key, "domain.delete", "domain:a.example"),
        (alice, "campaign.delete", "campaign:launch"),
    ]
    async with tenant_connection(db_pool, tenant) as conn:
        written = [
            await record(conn, ctx, action, target=target, details={"n": n})
            for n, (ctx, action, target) in enumerate(plan)
        ]
    async with tenant_connection(db_pool, other) as conn:
        await record(conn, alice, "campaign.create", target="campaign:launch")

    assert written[0].source_address == "203.0.113.9" and written[1].source_address == "2001:db8::1"
    assert [e.details["n"] for e in written] == list(range(len(plan)))
    assert all(a.at <= b.at for a, b in itertools.pairwise(written))

    async with tenant_connection(db_pool, tenant) as conn:
        everything = await list_entries(conn, limit=100)
        assert [e.id for e in everything.entries] == [e.id for e in reversed(written)]
        assert everything.next_cursor is None  # the other tenant's entry is not there

        by_actor = await list_entries(conn, actor="user:alice")
        assert [e.action for e in by_actor.entries] == [
            "campaign.delete",
            "contact.erase",
            "campaign.pause",
            "domain.create",
        ]
        by_action = await list_entries(conn, action="campaign.pause")
        assert [e.id for e in by_action.entries] == [written[2].id]
        by_prefix = await list_entries(conn, action="campaign.*", target="campaign:launch")
        assert [e.id for e in by_prefix.entries] == [written[i].id for i in (6, 3, 2, 1)]
        window = await list_entries(conn, since=written[2].at, until=written[5].at)
        assert {e.id for e in window.entries} <= {written[i].id for i in (2, 3, 4)}
        assert written[2].id in {e.id for e in window.entries}

        pages, cursor = [], None
        while True:
            page = await list_entries(conn, limit=3, cursor=cursor)
            pages.append([e.id for e in page.entries])
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert [len(p) for p in pages] == [3, 3, 1]
        assert [i for page in pages for i in page] == [e.id for e in reversed(written)]

        for field, call in (
            ("cursor", list_entries(conn, cursor="not-a-cursor")),
            ("limit", list_entries(conn, limit=0)),
            ("action", list_entries(conn, action="Campaign Pause")),
            ("action", record(conn, alice, "pause")),
            ("source_address", record(conn, Context("user:a", "not-an-ip"), "campaign.pause")),
        ):
            with pytest.raises(AuditError) as caught:
                await call
            assert caught.value.field == field


async def test_log_is_append_only_for_the_app_role_and_tenant_logins(
    db_pool: asyncpg.Pool, tenant_login: tuple[uuid.UUID, asyncpg.Connection]
) -> None:
    tenant, conn = tenant_login
    other = await new_tenant(db_pool, "audit-victim")
    async with tenant_connection(db_pool, other) as platform:
        await record(platform, Context("user:victim"), "campaign.create", target="campaign:x")

    # The tenant's own login appends and reads its own entries only.
    mine = await record(conn, Context("system:sender"), "campaign.pause", target="campaign:y")
    rows = await conn.fetch("SELECT id, tenant_id FROM audit_log")
    assert [(r["id"], r["tenant_id"]) for r in rows] == [(mine.id, tenant)]

    denied: list[str] = []
    attempts = {
        "tenant update": "UPDATE audit_log SET action = 'campaign.create'",
        "tenant delete": "DELETE FROM audit_log",
        "tenant truncate": "TRUNCATE audit_log",
        "tenant back-dates": "INSERT INTO audit_log (at, actor, action) "
        "VALUES ('2000-01-01', 'x', 'a.b')",
        "tenant writes for another": "INSERT INTO audit_log (tenant_id, actor, action) "
        "SELECT '00000000-0000-0000-0000-000000000001', 'x', 'a.b'",
        "tenant scrubs": "SELECT scrub_audit_address('x@example.com')",
    }
    for what, sql in attempts.items():
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(sql)
        denied.append(what)

    for what, sql in {
        "app update": "UPDATE audit_log SET action = 'campaign.create'",
        "app delete": "DELETE FROM audit_log",
        "app truncate": "TRUNCATE audit_log",
        "app back-dates": "UPDATE audit_log SET at = '2000-01-01'",
    }.items():
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with tenant_connection(db_pool, tenant) as app:
                assert await app.fetchval("SELECT current_user") == "penguinmails_app"
                await app.execute(sql)
        denied.append(what)
    # The erasure's scrub replaces an address and nothing else.
    with pytest.raises(asyncpg.RaiseError, match="not an e-mail address"):
        async with tenant_connection(db_pool, tenant) as app:
            await app.fetchval("SELECT scrub_audit_address('campaign')")
    denied.append("app scrubs a word")

    async with tenant_connection(db_pool, tenant) as app:
        page = await list_entries(app)
    assert [(e.id, e.action, e.at) for e in page.entries] == [(mine.id, mine.action, mine.at)]
    print(f"\n{len(denied)} attempts to change the audit log refused: {', '.join(denied)}")
