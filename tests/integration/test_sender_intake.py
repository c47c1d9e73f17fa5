"""Outcomes after the relay, through the real intake (aiosmtpd, as `penguinmails-sender intake`
serves it): receivers accept every message with 250, then DSNs come back to the return-path
(a Gmail-style 5.7.26, a 5.7.1 block, a 5.1.1) and feedback loops send ARF complaints to the
platform's fixed complaint address (one genuine, one forged with an unsubscribe token).
Delivery states, the campaign's counters and rates move; suppression applies only where the
report is about the recipient."""

from __future__ import annotations

import ipaddress
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiosmtplib
import asyncpg
import pytest

from penguinmails.common.db import tenant_connection
from penguinmails.common.db.audit import Context
from penguinmails.common.db.contacts import import_contacts
from penguinmails.common.db.ledger import (
    CampaignPlan,
    Relay,
    StopRules,
    campaign_counts,
    enqueue,
    get_pause_reason,
    set_sending,
    upsert_campaign,
    window_counts,
)
from penguinmails.common.egress import EgressPolicy
from penguinmails.common.keys import MasterKeys
from penguinmails.common.suppression import address_hash, is_suppressed
from penguinmails.common.webhooks import EventType, create_endpoint
from penguinmails.devstack.ports import free_port
from penguinmails.devstack.sink import SinkServer, StoredMessage
from penguinmails.sender.engine import Sender, SenderConfig
from penguinmails.sender.intake import (
    IntakeHandler,
    IntakeResult,
    complaint_addresses,
    intake_server,
)
from penguinmails.sender.secrets import DirSecrets
from tests.integration.sender_support import as_stored, dkim_folder, report, tenant_row
from tests.reports import build_arf, build_dsn

pytestmark = pytest.mark.integration

KEY = b"intake-test-suppression-key"
KEYS = MasterKeys.parse("intake-platform-master-key")
COMPLAINTS = "fbl@platform.example"
MAX_BYTES = 64 * 1024
ADDRESSES = ["auth", "blocked", "gone", "complainer", "victim", "quiet"]
GMAIL_5_7_26 = (
    "550-5.7.26 This mail has been blocked because the sender is unauthenticated. "
    "550 5.7.26 Gmail requires all senders to authenticate with either SPF or DKIM. - gsmtp"
)


def _by_recipient(messages: list[StoredMessage]) -> dict[str, StoredMessage]:
    return {m.rcpt_tos[0].partition("@")[0]: m for m in messages}


def last(handler: IntakeHandler) -> IntakeResult:
    return handler.results[-1]


async def test_dsns_and_complaints_after_acceptance(
    db_pool: asyncpg.Pool, postgres_dsn: str, tmp_path: Path
) -> None:
    name = f"in-{uuid.uuid4().hex[:6]}"
    tenant_id = await tenant_row(db_pool, name)
    dkim_folder(tmp_path / "d-dkim", "rsa1", "rsa2048")
    window_start = datetime.now(UTC) - timedelta(minutes=1)
    with SinkServer() as sink:
        plan = CampaignPlan(
            from_address="jane@sender.example",
            subject="Quick question",
            text="Hello {{ first_name }}",
            domain="sender.example",
            dkim_secret="d-dkim",
            unsubscribe_url="https://u.example/u",
            unsubscribe_mailto="unsubscribe@sender.example",
            postal_address="1 Way",
            relays=[Relay(name="sink", host="127.0.0.1", port=sink.port, tls="none")],
            # Bounces alone stay under 50% of the 6; the first complaint (1 in 6) breaches.
            stop_rules=StopRules(
                max_bounce_rate=0.5,
                max_complaint_rate=0.1,
                window="1h",
                window_seconds=3600,
                min_sample=len(ADDRESSES),
            ),
        )
        csv = "email,first_name\n" + "".join(f"{a}@dest.test,{a}\n" for a in ADDRESSES)
        uid = uuid.uuid4()
        async with tenant_connection(db_pool, tenant_id) as conn:
            await import_contacts(conn, "l", csv.encode(), KEY)
            # Subscribed to what the intake reports (never posted to here: the events are read
            # from the tables; docs/data-protection.md covers the dispatch).
            await create_endpoint(
                conn,
                Context("user:test"),
                "http://127.0.0.1:9/hooks",
                [EventType.BOUNCED, EventType.COMPLAINED],
                policy=EgressPolicy(allowed=(ipaddress.ip_network("127.0.0.0/8"),)),
            )
            await upsert_campaign(conn, uid=uid, namespace="ns", name="c", plan=plan)
            await enqueue(conn, uid, ["l"])
            await set_sending(conn, uid, True)
        config = SenderConfig(
            tenant_id=tenant_id, token_key=KEYS.token_key(tenant_id), poll_interval=0.05
        )
        await Sender(db_pool, config, secrets=DirSecrets(tmp_path)).run_until_idle()
        received = _by_recipient(list(sink.messages))
    assert sorted(received) == sorted(ADDRESSES)

    async def states() -> dict[str, str]:
        async with tenant_connection(db_pool, tenant_id) as conn:
            rows = await conn.fetch(
                "SELECT c.email, d.state, d.complained_at IS NOT NULL AS complained"
                " FROM deliveries d JOIN contacts c ON c.id = d.contact_id"
                " WHERE d.campaign_uid = $1",
                uid,
            )
        return {
            r["email"].partition("@")[0]: ("complained" if r["complained"] else r["state"])
            for r in rows
        }

    async def suppressed() -> set[str]:
        async with tenant_connection(db_pool, tenant_id) as conn:
            return {
                a
                for a in ADDRESSES
                if await is_suppressed(conn, address_hash(KEY, f"{a}@dest.test"))
            }

    assert set((await states()).values()) == {"sent"}
    handler = IntakeHandler(postgres_dsn, KEYS, complaint_addresses(COMPLAINTS))
    server = intake_server(handler, "127.0.0.1", free_port(), max_bytes=MAX_BYTES)
    server.start()
    try:
        port = server.port

        async def dsn(who: str, status: str, diagnostic: str) -> None:
            message = received[who]
            raw = build_dsn(
                status,
                diagnostic,
                recipient=f"{who}@dest.test",
                original=as_stored(message),
                to=message.mail_from,
            )
            await report(port, message.mail_from, raw)

        # A 5.7.1 policy block, reported after the relay had accepted it: bounced (the rate
        # moves), nobody suppressed, the campaign keeps sending.
        await dsn("blocked", "5.7.1", "550 5.7.1 Message rejected due to local policy")
        assert handler.results == [IntakeResult.BOUNCED]
        assert (await states())["blocked"] == "bounced"
        assert await suppressed() == set()
        async with tenant_connection(db_pool, tenant_id) as conn:
            assert await get_pause_reason(conn, uid) is None
        # The same DSN twice (MTAs retry) counts once.
        await dsn("blocked", "5.7.1", "550 5.7.1 Message rejected due to local policy")
        assert last(handler) == IntakeResult.IGNORED

        # 5.1.1: bounced and that recipient only suppressed.
        await dsn("gone", "5.1.1", "550 5.1.1 The email account does not exist")
        assert (await states())["gone"] == "bounced"
        assert await suppressed() == {"gone"}

        async def sending() -> bool:
            async with tenant_connection(db_pool, tenant_id) as conn:
                return bool(
                    await conn.fetchval("SELECT sending FROM campaigns WHERE uid = $1", uid)
                )

        assert await sending()
        # An ARF complaint at the fixed complaint address, the original message attached with
        # the Return-Path its receiver added: complained and suppressed, and the complaint
        # rate (1 in 6) breaches the stop rule: the intake closes the gate at once.
        await report(port, COMPLAINTS, build_arf(as_stored(received["complainer"])))
        assert last(handler) == IntakeResult.COMPLAINED
        assert (await states())["complainer"] == "complained"
        assert await suppressed() == {"gone", "complainer"}
        assert not await sending()

        # A forged complaint: the message as received (its List-Unsubscribe carries an
        # unsubscribe token), no bounce token: refused, nothing moves.
        assert b"unsubscribe+" in received["victim"].data
        await report(port, COMPLAINTS, build_arf(received["victim"].data))
        assert last(handler) == IntakeResult.IGNORED
        assert (await states())["victim"] == "sent"
        assert await suppressed() == {"gone", "complainer"}

        # Gmail's 5.7.26 (the domain fails authentication): bounced, nobody suppressed, and
        # this campaign pauses with the reason.
        await dsn("auth", "5.7.26", GMAIL_5_7_26)
        assert (await states())["auth"] == "bounced"
        assert await suppressed() == {"gone", "complainer"}
        async with tenant_connection(db_pool, tenant_id) as conn:
            reason = await get_pause_reason(conn, uid)
            assert reason is not None and "5.7.26" in reason
            assert not await conn.fetchval("SELECT sending FROM campaigns WHERE uid = $1", uid)
            counts = await campaign_counts(conn, uid)
            window = await window_counts(conn, uid, window_start)
        assert counts["sent"] == 3 and counts["bounced"] == 3 and counts["complained"] == 1
        # The stop rules' window sees them: 6 done, 3 bounced, 1 complaint.
        assert window == {"done": 6, "bounced": 3, "complained": 1}

        # Each counted bounce and complaint is a webhook event, once (the repeated DSN and
        # the forged complaint are not), naming the contact and, for a bounce, its status.
        async with tenant_connection(db_pool, tenant_id) as conn:
            events = await conn.fetch("SELECT payload FROM webhook_events ORDER BY created_at")
        seen = sorted(
            (
                json.loads(e["payload"])["type"],
                json.loads(e["payload"])["data"]["email"].partition("@")[0],
                json.loads(e["payload"])["data"].get("status"),
            )
            for e in events
        )
        assert seen == [
            ("delivery.bounced", "auth", "5.7.26"),
            ("delivery.bounced", "blocked", "5.7.1"),
            ("delivery.bounced", "gone", "5.1.1"),
            ("delivery.complained", "complainer", None),
        ], seen

        # Nothing else is taken, and the size limit holds (SIZE / 552).
        with pytest.raises(aiosmtplib.SMTPRecipientRefused):
            await report(port, "postmaster@platform.example", b"Subject: x\r\n\r\nx\r\n")
        big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * (MAX_BYTES // 1000 + 10)
        with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
            await report(port, received["quiet"].mail_from, big)
        assert refused.value.code == 552
        assert (await states())["quiet"] == "sent"
    finally:
        server.stop()
