"""The sender end to end through a real Postfix relay to recipient servers on loopback.

PostgreSQL (ledger, contacts, suppression), Redis (token buckets), Postfix (the relay, as MailU's
smtp would be), aiosmtpd sinks (recipients that store what they accept, answer 550 or 451 for
chosen addresses, and the return-path domain that receives Postfix's bounces), and the real
`penguinmails-sender` program, killed with SIGKILL several times while it sends.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import email
import email.header
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import dkim
import httpx
import pytest
import pytest_asyncio
from aiosmtpd.controller import Controller
from redis.asyncio import Redis

from penguinmails.api.unsubscribe import make_app
from penguinmails.common.db import tenant_connection
from penguinmails.common.db.audit import Context
from penguinmails.common.db.contacts import import_contacts
from penguinmails.common.db.ledger import (
    CampaignPlan,
    Relay,
    campaign_counts,
    enqueue,
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
from penguinmails.common.egress import EgressPolicy
from penguinmails.common.keys import MasterKeys
from penguinmails.common.suppression import (
    SuppressionReason,
    TokenPurpose,
    address_hash,
    is_suppressed,
    read_token,
    suppress,
)
from penguinmails.common.tenant_redis import ensure_tenant_redis_user
from penguinmails.common.webhooks import EventType, create_endpoint
from penguinmails.devstack.ports import free_port
from penguinmails.devstack.postfix import PostfixServer
from penguinmails.devstack.sink import SinkServer
from penguinmails.sender.intake import IntakeHandler, IntakeResult
from tests.integration.sender_support import tenant_row

pytestmark = pytest.mark.integration

KEY = b"test-platform-key-0123456789abcdef"
KEYS = MasterKeys.parse(KEY.decode())
DOMAIN = "sender.example"
RECIPIENT_DOMAIN = "dest.test"
CONTACTS = 1000
SUPPRESSED = [f"user{i}@{RECIPIENT_DOMAIN}" for i in (3, 30, 300)]
HARD_BOUNCES = [f"user{i}@{RECIPIENT_DOMAIN}" for i in (7, 70)]
GREYLISTED = [f"user{i}@{RECIPIENT_DOMAIN}" for i in (11, 111)]
MALFORMED_LINES = 3  # added to the CSV below


async def poll(
    predicate: Callable[[], Awaitable[Any]], *, within: float, what: str, interval: float = 0.25
) -> Any:
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = await predicate()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {within:.0f}s waiting for {what}: {last!r}")


@dataclass
class Stack:
    recipients: SinkServer
    intake: IntakeHandler
    relay: PostfixServer


@pytest.fixture(scope="module")
def stack(services_dir: Path, postgres_dsn: str) -> Iterator[Stack]:
    """Postfix relays to the recipients' server, and mail for the sending domain (bounces to
    the return-path) to the product's bounce intake, as the domain's MX would."""
    intake = IntakeHandler(postgres_dsn, KEYS)
    controller = Controller(intake, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        with (
            SinkServer() as recipients,
            PostfixServer(
                services_dir,
                relayhost=recipients.address,
                routes={DOMAIN: f"127.0.0.1:{controller.port}"},
            ) as relay,
        ):
            yield Stack(recipients, intake, relay)
    finally:
        controller.stop()


@dataclass
class Campaign:
    tenant_id: uuid.UUID
    uid: uuid.UUID
    keys: list[DkimKey]
    secrets_dir: Path
    dsn: str
    redis_url: str
    """The tenant's own logins, as the operator issues them: the sender never runs as anything
    else (tests/integration/test_isolation.py shows what they cannot reach)."""


def csv_file() -> bytes:
    lines = ["email,first_name,company"]
    for i in range(CONTACTS):
        lines.append(f"user{i}@{RECIPIENT_DOMAIN},Name{i},Company {i}")
    lines.insert(10, "not-an-address,Bad,Row")
    lines.insert(20, f"user5@{RECIPIENT_DOMAIN},Dup,Row")
    text = "\n".join(lines).encode()
    return text + b"\nbroken@dest.test,\xff\xfe,Latin\n"


def write_secret(directory: Path, name: str, data: dict[str, str]) -> None:
    folder = directory / name
    folder.mkdir(parents=True)
    for key, value in data.items():
        (folder / key).write_bytes(base64.b64decode(value))


@pytest_asyncio.fixture(loop_scope="session")
async def campaign(
    db_pool: asyncpg.Pool, postgres_dsn: str, redis_url: str, stack: Stack, tmp_path: Path
) -> Campaign:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    tenant_id = await tenant_row(db_pool, name)
    now = datetime.now(UTC)
    keys = [
        DkimKey("rsa1", "rsa2048", KeyState.ACTIVE, now, generate_private_key("rsa2048")),
        DkimKey("ed1", "ed25519", KeyState.ACTIVE, now, generate_private_key("ed25519")),
    ]
    write_secret(tmp_path / "secrets", "sender-example-dkim", secret_data(KeySet(tuple(keys))))
    uid = uuid.uuid4()
    plan = CampaignPlan(
        from_address=f"jane@{DOMAIN}",
        # Long non-ASCII subject and display name: folded and encoded, and DKIM must still
        # verify at the recipient after Postfix (issue 10: a 64-character French subject failed).
        from_name="Jeanne Dupont-Lefèvre, Équipe commerciale des Pingouins Francophones",
        subject="Une question rapide sur la délivrabilité de vos courriels, {{ first_name }} ?",
        text="Hi {{ first_name }},\n\nDoes {{ company }} need better mail?\n\nJane",
        html="<p>Hi {{ first_name }},</p><p>Does {{ company }} need better mail?</p>",
        domain=DOMAIN,
        dkim_secret="sender-example-dkim",
        unsubscribe_url="https://unsubscribe.penguinmails.test/u",
        unsubscribe_mailto=f"unsubscribe@{DOMAIN}",
        postal_address="1 Penguin Way, 12345 Iceberg, AQ",
        relays=[Relay(name="relay", host="127.0.0.1", port=stack.relay.port, tls="none")],
        per_mailbox_per_day=100_000,
    )
    async with tenant_connection(db_pool, tenant_id) as conn:
        report = await import_contacts(conn, "leads", csv_file(), KEY)
        assert report.imported == CONTACTS
        assert sorted(e.line for e in report.errors) == [11, 21, CONTACTS + 4]
        for address in SUPPRESSED:
            await suppress(conn, address_hash(KEY, address), SuppressionReason.MANUAL)
        await upsert_campaign(conn, uid=uid, namespace=f"tenant-{name}", name="hello", plan=plan)
        assert await enqueue(conn, uid, ["leads"]) == CONTACTS - len(SUPPRESSED)
        assert await enqueue(conn, uid, ["leads"]) == 0  # idempotent
        await set_sending(conn, uid, True)
    password, redis_password = new_password(), new_password()
    role = await ensure_tenant_login(db_pool, tenant_id, password)
    admin = Redis.from_url(redis_url)
    try:
        await ensure_tenant_redis_user(admin, role, tenant_id, redis_password)
    finally:
        await admin.aclose()
    return Campaign(
        tenant_id,
        uid,
        keys,
        tmp_path / "secrets",
        with_login(postgres_dsn, role, password),
        with_login(redis_url, role, redis_password),
    )


def start_sender(campaign: Campaign, tenant: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PM_TENANT": tenant,
        "PM_DATABASE_URL": campaign.dsn,
        "PM_REDIS_URL": campaign.redis_url,
        "PM_TOKEN_KEY": KEYS.token_key(campaign.tenant_id).encode(),
        "PM_SECRETS_DIR": str(campaign.secrets_dir),
        "PM_LEASE_SECONDS": "3",
        "PM_RETRY_BASE_SECONDS": "1",
        # With a 3 s lease an attempt may take 1.5 s: on this loaded machine a send can time
        # out after DATA; its safe delay (3600 s by default) is shortened like the lease.
        "PM_UNCERTAIN_RETRY_SECONDS": "2",
        "PM_POLL_SECONDS": "0.2",
        "PM_METRICS_PORT": "0",
        "PM_SENDER_CONCURRENCY": "16",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "penguinmails.sender"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def dns_for(campaign: Campaign) -> Callable[..., bytes | None]:
    records = {
        f"{key.selector}._domainkey.{DOMAIN}.".encode(): key.dns_value().encode()
        for key in campaign.keys
    }

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name if name.endswith(b".") else name + b".")

    return lookup


async def test_campaign_delivered_exactly_once_through_postfix_despite_sigkill(
    db_pool: asyncpg.Pool, redis_url: str, stack: Stack, campaign: Campaign
) -> None:
    for address in HARD_BOUNCES:
        stack.recipients.reply_for[address] = (550, f"5.1.1 <{address}>: no such user")
    for address in GREYLISTED:
        stack.recipients.set_reply_once(address, 451, "4.7.1 greylisted, try again")
    tenant = await db_pool.fetchval("SELECT name FROM tenants WHERE id = $1", campaign.tenant_id)
    login = await db_pool.fetchrow(
        "SELECT rolsuper, rolbypassrls FROM pg_roles r JOIN tenant_roles t "
        "ON t.role_name = r.rolname WHERE t.tenant_id = $1",
        campaign.tenant_id,
    )
    assert login is not None and not login["rolsuper"] and not login["rolbypassrls"]
    eligible = {f"user{i}@{RECIPIENT_DOMAIN}" for i in range(CONTACTS)} - set(SUPPRESSED)
    expected = eligible - set(HARD_BOUNCES)

    def arrived() -> list[str]:
        return [rcpt for message in stack.recipients.messages for rcpt in message.rcpt_tos]

    # Kill the sender five times while it sends; each restart picks up what is left. What a
    # kill can make arrive twice is what it had claimed and not recorded: the rows still
    # `sending` right after it died (handed to the relay or not), counted at each kill.
    kills = 0
    in_flight_at_kills: list[int] = []
    logs: list[str] = []
    for threshold in (100, 250, 400, 550, 700):
        sender = start_sender(campaign, tenant)
        try:

            async def reached(count: int = threshold) -> bool:
                return len(arrived()) >= count

            await poll(
                reached,
                within=120,
                what=f"{threshold} messages at the recipients",
                interval=0.05,
            )
        finally:
            sender.send_signal(signal.SIGKILL)
            sender.wait(10)
            kills += 1
            logs.append(sender.stderr.read().decode() if sender.stderr else "")
        async with tenant_connection(db_pool, campaign.tenant_id) as conn:
            in_flight_at_kills.append(
                await conn.fetchval("SELECT count(*) FROM deliveries WHERE state = 'sending'")
            )
    sender = start_sender(campaign, tenant)
    try:

        async def done() -> bool:
            async with tenant_connection(db_pool, campaign.tenant_id) as conn:
                counts = await campaign_counts(conn, campaign.uid)
            return counts["queued"] == 0 and counts["deferred"] == 0

        await poll(done, within=180, what="every delivery in a final state")
        await poll(
            lambda: asyncio.sleep(0, set(arrived()) >= expected and stack.relay.queue_size() == 0),
            within=60,
            what="Postfix to deliver everything, greylisted ones included",
        )
    finally:
        sender.send_signal(signal.SIGTERM)
        logs.append(sender.stderr.read().decode() if sender.stderr else "")
        assert sender.wait(30) == 0, logs[-1]

    # Its throttle buckets are under its own prefix, written with its own Redis user.
    admin = Redis.from_url(redis_url)
    try:
        assert await admin.keys(f"tenant:{campaign.tenant_id}:tb:*")
    finally:
        await admin.aclose()

    received = collections.Counter(arrived())
    # Every eligible contact got the message; suppressed ones and bounced ones none.
    assert set(received) == expected
    assert not set(received) & set(SUPPRESSED)
    duplicates = sum(count - 1 for count in received.values())
    # Sent again on purpose after the safe delay (result unknown after DATA): may arrive twice.
    uncertain = sum(log.count("unknown result after DATA") for log in logs)
    print(
        f"\n{kills} SIGKILLs, {duplicates} duplicate deliveries, in flight at the kills: "
        f"{in_flight_at_kills} (sum {sum(in_flight_at_kills)}), re-sent after an unknown "
        f"result: {uncertain}"
    )
    assert duplicates <= sum(in_flight_at_kills) + uncertain

    # Every message verifies with dkimpy (both signatures) and covers the RFC 8058 headers.
    lookup = dns_for(campaign)
    seen_ids: dict[str, str] = {}
    for message in stack.recipients.messages:
        parsed = email.message_from_bytes(message.data)
        assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert "<https://unsubscribe.penguinmails.test/u/" in parsed["List-Unsubscribe"]
        assert "mailto:unsubscribe+" in parsed["List-Unsubscribe"]
        checker = dkim.DKIM(message.data)
        for index in range(2):
            assert checker.verify(idx=index, dnsfunc=lookup)
        signature = (parsed.get_all("DKIM-Signature") or [""])[0]
        signed_headers = "".join(signature.split()).split("h=")[1].split(";")[0].split(":")
        assert {"list-unsubscribe", "list-unsubscribe-post", "from"} <= set(signed_headers)
        # A re-sent delivery carries the same Message-ID as its first copy.
        rcpt = message.rcpt_tos[0]
        assert seen_ids.setdefault(rcpt, parsed["Message-ID"]) == parsed["Message-ID"]
        assert "1 Penguin Way" in message.data.decode()
        subject = str(email.header.make_header(email.header.decode_header(parsed["Subject"])))
        number = rcpt.split("@")[0].removeprefix("user")
        assert (
            subject == f"Une question rapide sur la délivrabilité de vos courriels, Name{number} ?"
        )

    # Postfix bounced the 550 ones to the return-path: the intake marked and suppressed them.
    async def bounced() -> bool:
        return stack.intake.results.count(IntakeResult.BOUNCED) >= len(HARD_BOUNCES)

    await poll(bounced, within=30, what="bounce reports ingested at the return-path")
    assert stack.intake.results.count(IntakeResult.BOUNCED) == len(HARD_BOUNCES)
    async with tenant_connection(db_pool, campaign.tenant_id) as conn:
        for address in HARD_BOUNCES:
            assert await is_suppressed(conn, address_hash(KEY, address))
        counts = await campaign_counts(conn, campaign.uid)
    assert counts["sent"] == len(expected) == len(set(received))
    assert counts["bounced"] == len(HARD_BOUNCES)
    assert counts["total"] == len(eligible)

    # A One-Click POST to a message's unsubscribe URL suppresses that address.
    first = email.message_from_bytes(stack.recipients.messages[0].data)
    url = first["List-Unsubscribe"].split("<", 1)[1].split(">", 1)[0]
    token = url.rsplit("/", 1)[1]
    assert read_token(KEYS, TokenPurpose.UNSUBSCRIBE, token) is not None
    address = stack.recipients.messages[0].rcpt_tos[0]
    async with tenant_connection(db_pool, campaign.tenant_id) as conn:
        await create_endpoint(
            conn,
            Context("user:test"),
            "http://127.0.0.1:9/hooks",
            [EventType.UNSUBSCRIBED],
            policy=EgressPolicy(allowed=(ipaddress.ip_network("127.0.0.0/8"),)),
        )
    app = make_app(db_pool, KEYS)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://u.test"
    ) as http:
        page = await http.get(f"/u/{token}")
        assert page.status_code == 200 and "Unsubscribe" in page.text
        for _ in range(2):  # a repeat is harmless
            response = await http.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"})
            assert response.status_code == 200
        forged = await http.post(f"/u/{'a' * 55}", data={"List-Unsubscribe": "One-Click"})
        assert forged.status_code == 404
    async with tenant_connection(db_pool, campaign.tenant_id) as conn:
        assert await is_suppressed(conn, address_hash(KEY, address))
        assert (await campaign_counts(conn, campaign.uid))["unsubscribed"] == 1
        # One webhook event for the two clicks, naming the contact.
        events = await conn.fetch("SELECT payload FROM webhook_events")
    assert [
        (json.loads(e["payload"])["type"], json.loads(e["payload"])["data"]["email"])
        for e in events
    ] == [("delivery.unsubscribed", address)]
