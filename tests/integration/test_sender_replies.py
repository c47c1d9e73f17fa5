"""Replies through the real path: the sender delivers a campaign, contacts answer the mailbox
it was sent from, and the customer's mailbox server (a real Postfix, as MailU's) delivers
each reply to the customer's mailbox and a copy (`recipient_bcc_maps`) to the tenant's reply
address at the intake (aiosmtpd, as `penguinmails-sender intake` serves it).

The intake records a reply against the delivery whose Message-ID it answers (In-Reply-To, or
References), once per delivery, with a `delivery.replied` webhook event; it ignores
auto-replies (RFC 3834 and the vacation responders' headers) and a forged In-Reply-To that
names another tenant's message. The customer's mailbox receives every one of them."""

from __future__ import annotations

import asyncio
import email
import email.policy
import ipaddress
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import asyncpg
import pytest

from penguinmails.common.db import tenant_connection
from penguinmails.common.db.audit import Context
from penguinmails.common.db.contacts import import_contacts
from penguinmails.common.db.delivery_stats import daily_counts
from penguinmails.common.db.ledger import (
    CampaignPlan,
    Relay,
    enqueue,
    set_sending,
    upsert_campaign,
)
from penguinmails.common.egress import EgressPolicy
from penguinmails.common.keys import MasterKeys
from penguinmails.common.webhooks import EventType, create_endpoint
from penguinmails.devstack.ports import free_port
from penguinmails.devstack.postfix import PostfixServer
from penguinmails.devstack.sink import SinkServer, StoredMessage
from penguinmails.sender.engine import Sender, SenderConfig
from penguinmails.sender.intake import IntakeHandler, IntakeResult, intake_server
from penguinmails.sender.replies import reply_address
from penguinmails.sender.secrets import DirSecrets
from tests.integration.sender_support import dkim_folder, tenant_row

pytestmark = pytest.mark.integration

KEY = b"replies-test-suppression-key"
KEYS = MasterKeys.parse("replies-platform-master-key")
CONTACTS = ["ann", "bob", "cat", "dan", "eve", "fay"]


async def _send_campaign(
    pool: asyncpg.Pool, tenant_id: uuid.UUID, folder: Path, sender: str, sink: SinkServer
) -> tuple[uuid.UUID, dict[str, str]]:
    """One campaign to CONTACTS from `sender`, delivered to `sink`: its uid and the
    Message-ID each contact received."""
    domain = sender.partition("@")[2]
    secret = f"{domain.split('.')[0]}-dkim"
    dkim_folder(folder / secret, "s1", "rsa2048")
    plan = CampaignPlan(
        from_address=sender,
        subject="Quick question",
        text="Hello {{ first_name }}",
        domain=domain,
        dkim_secret=secret,
        unsubscribe_url="https://u.example/u",
        unsubscribe_mailto=f"unsubscribe@{domain}",
        postal_address="1 Way",
        relays=[Relay(name="sink", host="127.0.0.1", port=sink.port, tls="none")],
    )
    csv = "email,first_name\n" + "".join(f"{c}@dest.test,{c}\n" for c in CONTACTS)
    uid = uuid.uuid4()
    async with tenant_connection(pool, tenant_id) as conn:
        await import_contacts(conn, "l", csv.encode(), KEY)
        await upsert_campaign(conn, uid=uid, namespace="ns", name="c", plan=plan)
        await enqueue(conn, uid, ["l"])
        await set_sending(conn, uid, True)
    before = len(sink.messages)
    config = SenderConfig(
        tenant_id=tenant_id, token_key=KEYS.token_key(tenant_id), poll_interval=0.05
    )
    await Sender(pool, config, secrets=DirSecrets(folder)).run_until_idle()
    ids = {}
    for stored in sink.messages[before:]:
        parsed = email.message_from_bytes(stored.data, policy=email.policy.compat32)
        ids[stored.rcpt_tos[0].partition("@")[0]] = str(parsed["Message-ID"])
    assert sorted(ids) == sorted(CONTACTS)
    return uid, ids


def _reply(who: str, to: str, headers: dict[str, str]) -> bytes:
    message = EmailMessage()
    message["From"] = f"{who}@dest.test"
    message["To"] = to
    message["Subject"] = "Re: Quick question"
    message["Message-ID"] = f"<{uuid.uuid4().hex}@dest.test>"
    for name, value in headers.items():
        message[name] = value
    message.set_content(f"Tell me more ({who})")
    return message.as_bytes()


async def _wait(what: str, done: Callable[[], bool]) -> None:
    """Poll `done()` until it holds; Postfix hands mail over within seconds (1 s backoff)."""
    for _ in range(600):
        if done():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_replies_are_recorded_once_auto_replies_and_forgeries_ignored(
    db_pool: asyncpg.Pool, postgres_dsn: str, services_dir: Path, tmp_path: Path
) -> None:
    a = await tenant_row(db_pool, f"ra-{uuid.uuid4().hex[:6]}")
    b = await tenant_row(db_pool, f"rb-{uuid.uuid4().hex[:6]}")
    async with tenant_connection(db_pool, a) as conn:
        await create_endpoint(
            conn,
            Context("user:test"),
            "http://127.0.0.1:9/hooks",
            [EventType.REPLIED],
            policy=EgressPolicy(allowed=(ipaddress.ip_network("127.0.0.0/8"),)),
        )
    with SinkServer() as recipients:
        uid_a, ids_a = await _send_campaign(db_pool, a, tmp_path, "jane@sender.example", recipients)
        _, ids_b = await _send_campaign(db_pool, b, tmp_path, "max@other.example", recipients)

    handler = IntakeHandler(postgres_dsn, KEYS, complaint_to=())
    intake = intake_server(handler, "127.0.0.1", free_port())
    intake.start()
    # Tenant A's reply address, which its mailbox server copies inbound mail to.
    copy_to = reply_address(KEYS.token_key(a), a, "intake.test")
    try:
        with (
            SinkServer() as mailbox,  # the customer's real mailbox (jane@sender.example)
            PostfixServer(
                services_dir,
                routes={
                    "sender.example": mailbox.address,
                    "intake.test": f"127.0.0.1:{intake.port}",
                },
                settings={"recipient_bcc_maps": f"inline:{{ @sender.example={copy_to} }}"},
                hostname="mx.sender.example",
                name=f"pf-replies-{uuid.uuid4().hex[:6]}",
            ) as mx,
        ):
            replies = [
                # A reply: In-Reply-To names ann's message.
                ("ann", {"In-Reply-To": ids_a["ann"], "References": ids_a["ann"]}),
                # A client that writes only References (newest last).
                ("bob", {"References": f"<older@dest.test> {ids_a['bob']}"}),
                # Vacation responders: RFC 3834, Exchange/Zimbra, Precedence.
                ("cat", {"In-Reply-To": ids_a["cat"], "Auto-Submitted": "auto-replied"}),
                ("dan", {"In-Reply-To": ids_a["dan"], "X-Autoreply": "yes"}),
                ("eve", {"In-Reply-To": ids_a["eve"], "Precedence": "bulk"}),
                # A forged In-Reply-To: another tenant's message (fay of tenant B).
                ("fay", {"In-Reply-To": ids_b["fay"]}),
                # ann again in the same thread, and cat's own answer after her auto-reply.
                ("ann", {"In-Reply-To": ids_a["ann"]}),
                ("cat", {"In-Reply-To": ids_a["cat"], "Auto-Submitted": "no"}),
            ]
            for who, headers in replies:
                async with aiosmtplib.SMTP(hostname="127.0.0.1", port=mx.port) as smtp:
                    await smtp.sendmail(
                        f"{who}@dest.test",
                        ["jane@sender.example"],
                        _reply(who, "jane@sender.example", headers),
                    )
            await _wait("the replies and their copies", lambda: (
                len(mailbox.messages) == len(replies) and len(handler.results) == len(replies)
            ))  # fmt: skip
            delivered: list[StoredMessage] = list(mailbox.messages)
    finally:
        intake.stop()

    # The customer's mailbox received every reply, auto-replies and the forgery included.
    assert sorted(m.rcpt_tos[0] for m in delivered) == ["jane@sender.example"] * len(replies)
    assert sorted(handler.results) == sorted(
        [IntakeResult.REPLIED] * 3 + [IntakeResult.IGNORED] * 5
    ), handler.results

    async def replied(tenant: uuid.UUID) -> set[str]:
        async with tenant_connection(db_pool, tenant) as conn:
            rows = await conn.fetch(
                "SELECT c.email FROM deliveries d JOIN contacts c ON c.id = d.contact_id"
                " WHERE d.replied_at IS NOT NULL"
            )
        return {r["email"].partition("@")[0] for r in rows}

    assert await replied(a) == {"ann", "bob", "cat"}
    assert await replied(b) == set()  # the forged In-Reply-To found nothing in A's ledger

    # One delivery.replied event per replying contact (ann's second reply adds none).
    async with tenant_connection(db_pool, a) as conn:
        events = await conn.fetch("SELECT payload FROM webhook_events")
        campaign_rows = await conn.fetchval(
            "SELECT count(*) FROM deliveries WHERE campaign_uid = $1 AND replied_at IS NOT NULL",
            uid_a,
        )
    seen = sorted(
        (json.loads(e["payload"])["type"], json.loads(e["payload"])["data"]["email"])
        for e in events
    )
    assert seen == [("delivery.replied", f"{c}@dest.test") for c in ("ann", "bob", "cat")]
    assert campaign_rows == 3

    # The dashboard's series counts them on the day they came.
    day = datetime.now(UTC).date()
    (today,) = await daily_counts(db_pool, a, day, day)
    assert (today.sent, today.replies) == (len(CONTACTS), 3)
