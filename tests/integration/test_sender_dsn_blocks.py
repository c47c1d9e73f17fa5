"""Receivers' 5.7.x blocks that arrive later, as DSNs at the intake, reach the server or the
domain they are about (issue 10: they paused nothing, since the ledger did not record which
server carried a delivery).

Two relays (local sinks that accept everything, as a relay does before the receiver refuses);
the sender records on each delivery the server that carried it. Then, through the real intake:
three Microsoft-style IP blocks (5.7.1, S3150) for messages carried by server A, and a 5.1.1
for one carried by B: a later campaign, sent by a fresh sender (nothing in its memory), goes
entirely through B, and only the 5.1.1 recipient is suppressed. Three Gmail-style "low
reputation of the sending domain" blocks: that domain's next campaign waits (no attempt
used) while another domain's campaign on the same server sends. No campaign is paused. The
senders use the tenant's own database login, as in production; so do the relay's own 5.7.x
replies they record for the other pods.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from penguinmails.common.db import tenant_connection
from penguinmails.common.db.contacts import import_contacts
from penguinmails.common.db.ledger import (
    CampaignPlan,
    Relay,
    enqueue,
    get_pause_reason,
    set_sending,
    upsert_campaign,
)
from penguinmails.common.db.tenant_logins import ensure_tenant_login, new_password, with_login
from penguinmails.common.dkim.keys import (
    DkimKey,
    KeySet,
    KeyState,
    generate_private_key,
    secret_data,
)
from penguinmails.common.keys import MasterKeys
from penguinmails.common.suppression import address_hash, is_suppressed
from penguinmails.devstack.ports import free_port
from penguinmails.devstack.sink import SinkServer
from penguinmails.sender.engine import (
    BLOCK_PAUSE_SECONDS,
    BLOCK_STRIKES,
    Sender,
    SenderConfig,
)
from penguinmails.sender.intake import IntakeHandler, IntakeResult, intake_server
from penguinmails.sender.secrets import DirSecrets
from tests.integration.sender_support import dsn_for, plan, report, tenant_row

pytestmark = pytest.mark.integration

KEY = b"dsn-blocks-test-key"
KEYS = MasterKeys.parse("dsn-blocks-platform-master-key")
MICROSOFT_IP_BLOCK = (
    "550 5.7.1 Unfortunately, messages from [127.0.0.1] weren't sent. Please contact your "
    "Internet service provider since part of their network is on our block list (S3150)."
)
GMAIL_DOMAIN_BLOCK = (
    "550-5.7.1 [127.0.0.1] Our system has detected that this message is likely suspicious "
    "due to the very low reputation of the sending domain. - gsmtp"
)


async def test_receivers_blocks_reach_the_server_or_domain_they_name(
    db_pool: asyncpg.Pool, postgres_dsn: str, tmp_path: Path
) -> None:
    name = f"dsnb-{uuid.uuid4().hex[:6]}"
    tenant_id = await tenant_row(db_pool, name)
    for secret in ("one-dkim", "two-dkim"):
        folder = tmp_path / secret
        folder.mkdir()
        key = DkimKey(
            "ed1", "ed25519", KeyState.ACTIVE, datetime.now(UTC), generate_private_key("ed25519")
        )
        for item, value in secret_data(KeySet((key,))).items():
            (folder / item).write_bytes(base64.b64decode(value))
    config = SenderConfig(
        tenant_id=tenant_id, token_key=KEYS.token_key(tenant_id), poll_interval=0.05
    )
    # The tenant's own login, as the operator issues it to the sender.
    password = new_password()
    role = await ensure_tenant_login(db_pool, tenant_id, password)
    sender_pool = await asyncpg.create_pool(
        with_login(postgres_dsn, role, password), min_size=1, max_size=4
    )

    async def campaign(list_name: str, count: int, plan: CampaignPlan) -> uuid.UUID:
        csv = "email\n" + "".join(f"{list_name}-{i}@dest.test\n" for i in range(count))
        uid = uuid.uuid4()
        async with tenant_connection(db_pool, tenant_id) as conn:
            await import_contacts(conn, list_name, csv.encode(), KEY)
            await upsert_campaign(conn, uid=uid, namespace="ns", name=list_name, plan=plan)
            await enqueue(conn, uid, [list_name])
            await set_sending(conn, uid, True)
        return uid

    async def send() -> None:
        # A fresh sender each time: what it skips, it learnt from the database.
        await Sender(sender_pool, config, secrets=DirSecrets(tmp_path)).run_until_idle()

    async def rows(uid: uuid.UUID) -> dict[str, asyncpg.Record]:
        async with tenant_connection(db_pool, tenant_id) as conn:
            found = await conn.fetch(
                "SELECT c.email, d.state, d.relay, d.attempts, d.reason"
                " FROM deliveries d JOIN contacts c ON c.id = d.contact_id"
                " WHERE d.campaign_uid = $1",
                uid,
            )
        return {r["email"]: r for r in found}

    async def blocks() -> list[tuple[str, str, str]]:
        async with tenant_connection(db_pool, tenant_id) as conn:
            found = await conn.fetch("SELECT scope, target, source FROM sending_blocks")
        return sorted((r["scope"], r["target"], r["source"]) for r in found)

    with SinkServer() as relay_a, SinkServer() as relay_b:
        a = Relay(name="srv-a", host="127.0.0.1", port=relay_a.port, tls="none")
        b = Relay(name="srv-b", host="127.0.0.1", port=relay_b.port, tls="none")
        first = await campaign("first", 30, plan("one.example", [a, b]))
        await send()
        via = {m.rcpt_tos[0]: ("srv-a", m) for m in relay_a.messages}
        via |= {m.rcpt_tos[0]: ("srv-b", m) for m in relay_b.messages}
        # The ledger names the server that carried each delivery.
        recorded = await rows(first)
        assert {e: (r["state"], r["relay"]) for e, r in recorded.items()} == {
            e: ("sent", server) for e, (server, _) in via.items()
        }
        by_a = [m for server, m in via.values() if server == "srv-a"]
        by_b = [m for server, m in via.values() if server == "srv-b"]
        print(f"\nfirst campaign: {len(by_a)} carried by srv-a, {len(by_b)} by srv-b")
        assert len(by_a) > BLOCK_STRIKES and by_b

        handler = IntakeHandler(postgres_dsn, KEYS, ())
        server = intake_server(handler, "127.0.0.1", free_port())
        server.start()
        try:
            # Receivers block server A's address, after the relay had accepted: three DSNs.
            for message in by_a[:BLOCK_STRIKES]:
                await report(
                    server.port, message.mail_from, dsn_for(message, "5.7.1", MICROSOFT_IP_BLOCK)
                )
            # A recipient-specific 5.1.1 for a message carried by B: that recipient only.
            gone = by_b[0]
            await report(
                server.port, gone.mail_from, dsn_for(gone, "5.1.1", "550 5.1.1 no such user")
            )
            assert handler.results == [IntakeResult.BOUNCED] * (BLOCK_STRIKES + 1)
            assert await blocks() == [("server", "srv-a", "dsn")] * BLOCK_STRIKES
            async with tenant_connection(db_pool, tenant_id) as conn:
                suppressed = [e for e in via if await is_suppressed(conn, address_hash(KEY, e))]
            assert suppressed == [gone.rcpt_tos[0]]

            # The next campaign on the same servers, by a sender that saw none of it itself:
            # every message through B.
            a_before, b_before = len(relay_a.messages), len(relay_b.messages)
            second = await campaign("second", 20, plan("one.example", [a, b]))
            await send()
            second_rows = await rows(second)
            print(
                f"second campaign: srv-a {len(relay_a.messages) - a_before}, "
                f"srv-b {len(relay_b.messages) - b_before}"
            )
            assert len(relay_a.messages) == a_before
            assert len(relay_b.messages) - b_before == 20
            assert {(r["state"], r["relay"]) for r in second_rows.values()} == {("sent", "srv-b")}

            # Receivers block the domain (its reputation), not the server: three DSNs.
            for message in relay_b.messages[b_before : b_before + BLOCK_STRIKES]:
                await report(
                    server.port, message.mail_from, dsn_for(message, "5.7.1", GMAIL_DOMAIN_BLOCK)
                )
            assert await blocks() == sorted(
                [("server", "srv-a", "dsn")] * BLOCK_STRIKES
                + [("domain", "one.example", "dsn")] * BLOCK_STRIKES
            )
        finally:
            server.stop()

        # That domain's next campaign waits, without using attempts; another domain's
        # campaign on the same server (B) sends.
        b_before = len(relay_b.messages)
        third = await campaign("third", 10, plan("one.example", [b]))
        other = await campaign("other", 10, plan("two.example", [b]))
        await send()
        third_rows, other_rows = await rows(third), await rows(other)
        assert len(relay_b.messages) - b_before == 10
        assert {r["state"] for r in other_rows.values()} == {"sent"}
        assert {(r["state"], r["attempts"]) for r in third_rows.values()} == {("queued", 0)}
        assert all("one.example is blocked" in r["reason"] for r in third_rows.values())
        # ...until the block ends, not claimed again every few seconds meanwhile (the delay
        # also has the requeue's backoff, at least transient_backoff / 2, beyond the end).
        async with tenant_connection(db_pool, tenant_id) as conn:
            ends = await conn.fetchval(
                "SELECT max(at) + make_interval(secs => $1) FROM sending_blocks"
                " WHERE scope = 'domain'",
                BLOCK_PAUSE_SECONDS,
            )
            due = await conn.fetchval(
                "SELECT min(next_attempt_at) FROM deliveries WHERE campaign_uid = $1", third
            )
        assert due > ends

        # A relay that answers with a 5.7.1 block itself: each reply is recorded (with the
        # tenant's login) for the other pods, against that server.
        with SinkServer() as relay_c:
            for i in range(4):
                relay_c.reply_for[f"listed-{i}@dest.test"] = (550, MICROSOFT_IP_BLOCK)
            c = Relay(name="srv-c", host="127.0.0.1", port=relay_c.port, tls="none")
            listed = await campaign("listed", 4, plan("two.example", [c]))
            await send()
            refused = len(relay_c.refused)
        assert refused >= BLOCK_STRIKES
        assert (await blocks()).count(("server", "srv-c", "relay")) == refused
        assert {r["state"] for r in (await rows(listed)).values()} <= {"failed", "queued"}
    await sender_pool.close()

    async with tenant_connection(db_pool, tenant_id) as conn:
        for uid in (first, second, third, other, listed):
            assert await get_pause_reason(conn, uid) is None
            assert await conn.fetchval("SELECT sending FROM campaigns WHERE uid = $1", uid)
