"""A receivers' block on a shared-pool server counts for every tenant on it (issue 10,
migration 0014), without one tenant reading another's rows, and without one tenant able to
block the pool by forging DSNs.

Two shared-pool servers (local sinks): pool-1's IP is listed (it refuses everything with
Microsoft's 5.7.1 S3150), pool-2 is clean. Three tenants, each with its own database login
and its own sender process, as in production:

1. Tenant A sends through both: pool-1's 5.7.1 replies are strikes against it (A's own rows,
   and the platform's pool strikes).
2. Tenant C sends through pool-2, then "bounces" all of its own messages with forged 5.7.1
   DSNs at the real intake (a customer can: the bounce token is in each message it received).
3. Tenant B, which never saw a strike itself, sends through both: every message goes through
   pool-2. pool-1 is skipped because of A's strikes; pool-2 is not, for all of C's forged
   DSNs (one tenant's DSNs count as one strike against a pool server).
4. B's login cannot read the pool strikes, the pool server list, or A's and C's blocks; it
   learns only (server, until); it cannot strike a server for a delivery that is not its own
   or that the server did not carry.
5. The bound: DSNs block pool-2 for everyone once three tenants (BLOCK_STRIKES) report it.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from penguinmails.common.db import tenant_connection
from penguinmails.common.db.blocks import (
    BLOCK_PAUSE_SECONDS,
    BLOCK_STRIKES,
    BLOCK_WINDOW_SECONDS,
    pool_blocks,
    pool_server_block,
    pool_server_name,
    register_pool_server,
)
from penguinmails.common.db.contacts import import_contacts
from penguinmails.common.db.ledger import (
    Relay,
    enqueue,
    set_sending,
    upsert_campaign,
)
from penguinmails.common.db.tenant_logins import (
    ensure_tenant_login,
    new_password,
    scram_verifier,
    with_login,
)
from penguinmails.common.dkim.keys import (
    DkimKey,
    KeySet,
    KeyState,
    generate_private_key,
    secret_data,
)
from penguinmails.common.keys import MasterKeys
from penguinmails.devstack.ports import free_port
from penguinmails.devstack.sink import SinkServer
from penguinmails.sender.intake import IntakeHandler, IntakeResult, intake_server
from tests.integration.sender_support import (
    dsn_for,
    plan,
    report,
    start_sender,
    stop_sender,
    tenant_row,
)

pytestmark = pytest.mark.integration

KEY = b"pool-blocks-test-key"
KEYS = MasterKeys.parse("pool-blocks-platform-master-key")
MICROSOFT_IP_BLOCK = (
    "550 5.7.1 Unfortunately, messages from [127.0.0.1] weren't sent. Please contact your "
    "Internet service provider since part of their network is on our block list (S3150)."
)
COUNTS = {"a": 12, "b": 10, "c": 5}
"""Contacts per tenant's campaign."""


@dataclass(frozen=True)
class _Tenant:
    key: str
    name: str
    id: uuid.UUID
    dsn: str
    """Its own login (what the operator puts in its sender's Secret)."""
    secrets: Path


async def _platform_login(db_pool: asyncpg.Pool, postgres_dsn: str) -> str:
    """A login of the platform's shape (the operator's, the intake's): a member of
    penguinmails_app and penguinmails_platform, no superuser, not the schema's owner."""
    role, password = f"pm_platform_{uuid.uuid4().hex[:8]}", new_password()
    await db_pool.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{scram_verifier(password)}'")
    await db_pool.execute(f"GRANT penguinmails_app, penguinmails_platform TO {role}")
    return with_login(postgres_dsn, role, password)


async def test_a_pool_server_block_counts_for_every_tenant_without_sharing_rows(
    db_pool: asyncpg.Pool, postgres_dsn: str, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:6]
    # As the operator plans them: qualified by the platform's namespace.
    pool1 = pool_server_name("penguinmails", f"pool-1-{run}")
    pool2 = pool_server_name("penguinmails", f"pool-2-{run}")

    async def tenant(key: str) -> _Tenant:
        name = f"poolb-{key}-{run}"
        tenant_id = await tenant_row(db_pool, name)
        secrets = tmp_path / key
        folder = secrets / f"{key}-dkim"
        folder.mkdir(parents=True)
        dkim = DkimKey(
            "ed1", "ed25519", KeyState.ACTIVE, datetime.now(UTC), generate_private_key("ed25519")
        )
        for item, value in secret_data(KeySet((dkim,))).items():
            (folder / item).write_bytes(base64.b64decode(value))
        password = new_password()
        role = await ensure_tenant_login(db_pool, tenant_id, password)
        return _Tenant(key, name, tenant_id, with_login(postgres_dsn, role, password), secrets)

    a, b, c = [await tenant(key) for key in ("a", "b", "c")]
    # What the operator and the intake connect as; the test's own pool is a superuser's.
    platform_dsn = await _platform_login(db_pool, postgres_dsn)
    platform = await asyncpg.create_pool(platform_dsn, min_size=1, max_size=2)
    try:

        async def campaign(t: _Tenant, relays: list[Relay]) -> uuid.UUID:
            csv = "email\n" + "".join(f"{t.key}-{i}@dest.test\n" for i in range(COUNTS[t.key]))
            uid = uuid.uuid4()
            async with tenant_connection(db_pool, t.id) as conn:
                await import_contacts(conn, t.key, csv.encode(), KEY)
                await upsert_campaign(
                    conn,
                    uid=uid,
                    namespace="ns",
                    name=t.key,
                    plan=plan(f"{t.key}.example", relays),
                )
                await enqueue(conn, uid, [t.key])
                await set_sending(conn, uid, True)
            return uid

        async def rows(t: _Tenant) -> dict[str, asyncpg.Record]:
            async with tenant_connection(db_pool, t.id) as conn:
                found = await conn.fetch(
                    "SELECT c.email, d.id, d.state, d.relay"
                    " FROM deliveries d JOIN contacts c ON c.id = d.contact_id"
                )
            return {r["email"]: r for r in found}

        async def own_blocks(t: _Tenant) -> list[tuple[str, str]]:
            async with tenant_connection(db_pool, t.id) as conn:
                found = await conn.fetch("SELECT target, source FROM sending_blocks")
            return sorted((r["target"], r["source"]) for r in found)

        async def pool_strikes() -> list[tuple[str, uuid.UUID, str]]:
            """The platform's view (its own login, no tenant scope)."""
            found = await platform.fetch(
                "SELECT server, tenant_id, source FROM pool_server_strikes"
            )
            return sorted((r["server"], r["tenant_id"], r["source"]) for r in found)

        async def send(t: _Tenant, done: Callable[[], Awaitable[bool]], what: str) -> str:
            """Run the tenant's sender process until `done` (a sender that exits fails at once,
            with its log; the bound is only a guard against a hang). Returns its log."""
            sender = start_sender(t.name, t.dsn, KEYS.token_key(t.id).encode(), t.secrets)
            try:
                for _ in range(1200):
                    if await done():
                        break
                    if sender.poll() is not None:
                        raise AssertionError(
                            f"the sender exited: {sender.communicate()[1].decode()}"
                        )
                    await asyncio.sleep(0.25)
                else:
                    raise AssertionError(f"never reached: {what}")
            finally:
                log = stop_sender(sender)
            return log

        def finished(t: _Tenant) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                found = await rows(t)
                return len(found) == COUNTS[t.key] and all(
                    r["state"] in ("sent", "failed") for r in found.values()
                )

            return check

        # The platform registers its labelled pool servers (the operator's job).
        async with platform.acquire() as conn:
            await register_pool_server(conn, pool1)
            await register_pool_server(conn, pool2)

        with SinkServer() as listed, SinkServer() as clean:
            # pool-1's address is on Microsoft's block list: it refuses everybody's mail.
            for key, count in COUNTS.items():
                for i in range(count):
                    listed.reply_for[f"{key}-{i}@dest.test"] = (550, MICROSOFT_IP_BLOCK)
            via1 = Relay(name=pool1, host="127.0.0.1", port=listed.port, tls="none")
            via2 = Relay(name=pool2, host="127.0.0.1", port=clean.port, tls="none")

            # 1. Tenant A: pool-1's refusals are strikes against it, for every tenant.
            await campaign(a, [via1, via2])
            await send(a, finished(a), "tenant A's campaign finished")
            refused_a = len(listed.refused)
            print(f"\ntenant A: pool-1 refused {refused_a}, pool-2 carried {len(clean.messages)}")
            assert refused_a >= BLOCK_STRIKES
            assert await pool_strikes() == [(pool1, a.id, "relay")] * refused_a
            assert await own_blocks(a) == [(pool1, "relay")] * refused_a
            async with platform.acquire() as conn:
                shown = await pool_server_block(conn, pool1)
            assert shown is not None and shown.count == refused_a and shown.status == "5.7.1"

            # 2. Tenant C sends through pool-2 only, then forges a 5.7.1 DSN for each message.
            await campaign(c, [via2])
            await send(c, finished(c), "tenant C's campaign finished")
            by_c = [m for m in clean.messages if m.rcpt_tos[0].startswith("c-")]
            assert len(by_c) == COUNTS["c"]
            handler = IntakeHandler(platform_dsn, KEYS, ())
            intake = intake_server(handler, "127.0.0.1", free_port())
            intake.start()
            try:
                for message in by_c:
                    await report(
                        intake.port,
                        message.mail_from,
                        dsn_for(message, "5.7.1", MICROSOFT_IP_BLOCK),
                    )
            finally:
                intake.stop()
            assert handler.results == [IntakeResult.BOUNCED] * COUNTS["c"]
            # C's own mail now skips pool-2 (its own strikes, its own rows); the pool keeps it.
            assert await own_blocks(c) == [(pool2, "dsn")] * COUNTS["c"]
            assert (await pool_strikes()).count((pool2, c.id, "dsn")) == COUNTS["c"]
            async with platform.acquire() as conn:
                assert await pool_server_block(conn, pool2) is None

            # 3. Tenant B, which never saw a strike: all of its mail through pool-2.
            refused_before, carried_before = len(listed.refused), len(clean.messages)
            await campaign(b, [via1, via2])
            log = await send(b, finished(b), "tenant B's campaign finished")
            by_b = [m for m in clean.messages[carried_before:] if m.rcpt_tos[0].startswith("b-")]
            print(
                f"tenant B: pool-1 refused {len(listed.refused) - refused_before}, "
                f"pool-2 carried {len(by_b)}"
            )
            assert listed.refused[refused_before:] == []
            assert not [m for m in listed.messages if m.rcpt_tos[0].startswith("b-")]
            assert len(by_b) == COUNTS["b"]
            assert {(r["state"], r["relay"]) for r in (await rows(b)).values()} == {("sent", pool2)}
            assert await own_blocks(b) == []
            assert f"shared-pool server {pool1}: blocked by receivers" in log

            # 4. Isolation: B's login reads nothing of A's or C's, and learns only (server, until).
            b_rows = await rows(b)
            a_failed = next(r for r in (await rows(a)).values() if r["state"] == "failed")
            login = await asyncpg.connect(b.dsn)
            try:
                for table in ("pool_server_strikes", "pool_servers"):
                    with pytest.raises(asyncpg.InsufficientPrivilegeError):
                        await login.fetch(f"SELECT * FROM {table}")  # noqa: S608 (fixed names)
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await login.fetch("SELECT * FROM pool_server_block_details(600, 3, 900)")
                # A's and C's strikes are theirs, even when B names A as its tenant.
                async with login.transaction():
                    await login.execute(
                        "SELECT set_config('penguinmails.tenant_id', $1, true)", str(a.id)
                    )
                    assert await login.fetchval("SELECT count(*) FROM sending_blocks") == 0
                    assert await login.fetchval("SELECT count(*) FROM deliveries") == COUNTS["b"]
                found = await login.fetch(
                    "SELECT * FROM pool_server_blocks($1, $2, $3)",
                    BLOCK_WINDOW_SECONDS,
                    BLOCK_STRIKES,
                    BLOCK_PAUSE_SECONDS,
                )
                assert [list(r.keys()) for r in found] == [["server", "until"]]
                assert [r["server"] for r in found] == [pool1]
                # Strikes it may not record: A's delivery; its own, against a server that did
                # not carry it; its own, against a server that is not a pool server, nor is
                # the pool server's bare name (what a tenant may call its own SmtpServer).
                mine = b_rows["b-0@dest.test"]["id"]
                bare = pool1.partition("/")[2]
                for server, delivery in (
                    (pool1, a_failed["id"]),
                    (pool1, mine),
                    ("srv", mine),
                    (bare, mine),
                ):
                    added = await login.fetchval(
                        "SELECT record_pool_strikes($1::text[], $2::bigint[], $3::text[], 'relay')",
                        [server],
                        [delivery],
                        ["5.7.1"],
                    )
                    assert added == 0, (server, delivery)
            finally:
                await login.close()
            assert len(await pool_strikes()) == refused_a + COUNTS["c"]

            # 5. The bound on DSNs: one strike per tenant. B's and then A's report of pool-2:
            # blocked for everyone at the third tenant, not before. (A new intake: a handler's
            # database pool belongs to its server's event loop.)
            intake = intake_server(IntakeHandler(platform_dsn, KEYS, ()), "127.0.0.1", free_port())
            intake.start()
            try:
                await report(
                    intake.port, by_b[0].mail_from, dsn_for(by_b[0], "5.7.1", MICROSOFT_IP_BLOCK)
                )
                async with platform.acquire() as conn:
                    assert await pool_server_block(conn, pool2) is None
                by_a = next(m for m in clean.messages if m.rcpt_tos[0].startswith("a-"))
                await report(
                    intake.port, by_a.mail_from, dsn_for(by_a, "5.7.1", MICROSOFT_IP_BLOCK)
                )
            finally:
                intake.stop()
            async with platform.acquire() as conn:
                shown = await pool_server_block(conn, pool2)
            assert shown is not None and shown.count == BLOCK_STRIKES
            print(f"pool-2: {COUNTS['c']} DSNs from C, 1 from B, 1 from A: {shown.count} strikes")
    finally:
        await platform.close()


async def test_pool_block_counts_within_the_window_and_lasts_the_pause(
    db_pool: asyncpg.Pool, postgres_dsn: str
) -> None:
    """The counting rule on strikes placed in time (written as the platform, back-dated):
    BLOCK_STRIKES counted within BLOCK_WINDOW_SECONDS, blocked until BLOCK_PAUSE_SECONDS
    after the last of them; one tenant's DSNs are one strike. A tenant's login sees the
    result as (server, until) only."""
    run = uuid.uuid4().hex[:6]
    tenants = []
    for key in ("x", "y"):
        name = f"poolw-{key}-{run}"
        tenants.append(await tenant_row(db_pool, name))
    x, y = tenants
    now = await db_pool.fetchval("SELECT now()")
    cases: dict[str, list[tuple[float, uuid.UUID, str]]] = {
        # name: (minutes ago, tenant, source) of each strike
        "two": [(1, x, "relay"), (0.5, x, "relay")],
        "paused-out": [(30, x, "relay"), (25, x, "relay"), (21, x, "relay")],
        "spread": [(12, x, "relay"), (11, x, "relay"), (1, x, "relay")],
        "blocked": [(14, x, "relay"), (13, y, "relay"), (5, x, "relay")],
        "one-tenant-dsns": [(1, x, "dsn")] * 4 + [(0.5, y, "relay")],
        "two-tenant-dsns": [(2, x, "dsn"), (1, x, "dsn"), (1, y, "dsn"), (0.5, y, "relay")],
    }
    delivery = 10**15 + int(run, 16) * 100  # no FK: ids of this test only
    expected = {f"blocked-{run}": 5.0, f"two-tenant-dsns-{run}": 0.5}
    async with db_pool.acquire() as conn:
        for case, strikes in cases.items():
            server = f"{case}-{run}"
            await register_pool_server(conn, server)
            for ago, tenant_id, source in strikes:
                delivery += 1
                await conn.execute(
                    "INSERT INTO pool_server_strikes"
                    " (server, tenant_id, delivery_id, source, status, at)"
                    " VALUES ($1, $2, $3, $4, '5.7.1', $5)",
                    server,
                    tenant_id,
                    delivery,
                    source,
                    now - timedelta(minutes=ago),
                )
        for server, ago in expected.items():
            shown = await pool_server_block(conn, server)
            assert shown is not None and shown.at == now - timedelta(minutes=ago), server
            assert shown.count == BLOCK_STRIKES, server
        for case in cases:
            if f"{case}-{run}" not in expected:
                assert await pool_server_block(conn, f"{case}-{run}") is None, case

    password = new_password()
    role = await ensure_tenant_login(db_pool, x, password)
    login = await asyncpg.connect(with_login(postgres_dsn, role, password))
    try:
        found = {b.server: b for b in await pool_blocks(login) if b.server.endswith(run)}
    finally:
        await login.close()
    assert set(found) == set(expected)
    for server, ago in expected.items():
        assert found[server].until == now - timedelta(minutes=ago) + timedelta(
            seconds=BLOCK_PAUSE_SECONDS
        )
