"""Usage notices at 80/95/100%, once each per period; the purge of old Stripe events.

The operator runs as in production (a process under kopf). The notices' e-mails go through a
real Postfix relay (STARTTLS, verified against the relay's CA as PM_NOTICE_SMTP_CA) to a
recipient sink; their webhook events are delivered by the real
dispatcher to a receiver that verifies them with the Standard Webhooks reference library. Sent
messages are ledger rows written here as the senders record them (as in test_billing_usage.py):
a plan of a few messages makes the thresholds reachable.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from kubernetes import client
from kubernetes.client.rest import ApiException

from penguinmails.api.billing.plans import Allowance, Plan, put_plan
from penguinmails.api.v1alpha1.tiers import Tier
from penguinmails.common.db import tenant_connection
from penguinmails.common.db.audit import Context
from penguinmails.common.db.tenants import get_tenant, upsert_tenant
from penguinmails.common.egress import EgressPolicy
from penguinmails.common.settings import BILLING_EVENT_RETENTION, NoticeSettings
from penguinmails.common.webhook_dispatch import Dispatcher
from penguinmails.common.webhooks import EventType, create_endpoint
from penguinmails.devstack.postfix import PostfixServer
from penguinmails.devstack.sink import SinkServer
from penguinmails.operator import notices
from penguinmails.operator.usage import month_start
from tests.integration.conftest import GROUP, VERSION, OperatorFactory, OperatorProcess, wait_for
from tests.integration.test_billing_usage import record_sent, tenant_body
from tests.integration.test_webhooks import Receiver, loopback_allowed, receiver

pytestmark = pytest.mark.integration

__all__ = ["loopback_allowed", "receiver"]  # fixtures used by name

CAPPED = Plan(Tier.STARTER, "price_noticeStarterM", None, 20, overage_allowed=False)
METERED = Plan(Tier.BUSINESS, "price_noticeBusinessM", None, 10, overage_allowed=True)
FROM = "PenguinMails Billing <billing@penguinmails.test>"
BILLING_URL = "https://app.penguinmails.test/billing"
ADMIN = Context("user:admin", "198.51.100.7", "req_notices")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def plans(db_pool: asyncpg.Pool) -> AsyncIterator[None]:
    await put_plan(db_pool, CAPPED)
    await put_plan(db_pool, METERED)
    yield
    # Plans of a few messages would stop other modules' campaigns: gone after this module.
    await db_pool.execute("DELETE FROM billing_plans WHERE tier IN ('starter', 'business')")


@pytest.fixture(scope="module")
def mail(services_dir: Path) -> Iterator[tuple[SinkServer, PostfixServer]]:
    """The platform's relay (Postfix) and the mailboxes behind it (a sink)."""
    with (
        SinkServer() as sink,
        PostfixServer(
            services_dir, relayhost=sink.address, tls=True, hostname="localhost", name="notices"
        ) as relay,
    ):
        yield sink, relay


def notice_settings(relay: PostfixServer) -> dict[str, str]:
    """Production's defaults (STARTTLS required, certificate verified) but for the relay's
    address and its self-signed certificate as the trusted CA."""
    assert relay.tls_cert is not None
    return {
        "PM_NOTICE_SMTP_HOST": "localhost",
        "PM_NOTICE_SMTP_PORT": str(relay.port),
        "PM_NOTICE_SMTP_CA": relay.tls_cert.read_text(),
        "PM_NOTICE_FROM": FROM,
        "PM_NOTICE_BILLING_URL": BILLING_URL,
    }


@pytest.fixture(scope="module")
def operator(
    plans: None, operator_process: OperatorFactory, mail: tuple[SinkServer, PostfixServer]
) -> Iterator[OperatorProcess]:
    handle = operator_process(**notice_settings(mail[1]))
    yield handle
    handle.stop()
    handle.assert_no_errors()


def tenant(api: client.CustomObjectsApi, name: str) -> dict[str, Any]:
    return dict(api.get_cluster_custom_object(GROUP, VERSION, "tenants", name))


async def until(predicate: Any, what: str) -> Any:
    """`wait_for` off the event loop (the operator needs a few resync passes of 3 s)."""
    return await asyncio.to_thread(wait_for, predicate, timeout=120, what=what)


def mails_to(sink: SinkServer, address: str) -> list[EmailMessage]:
    found = []
    for stored in sink.messages:
        if address in stored.rcpt_tos:
            parsed = email.message_from_bytes(stored.data, policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            found.append(parsed)
    return found


def header(message: EmailMessage, name: str) -> str:
    """A header's value; a long one (the Message-ID) arrives folded onto a second line."""
    return str(message[name]).strip()


def threshold_of(message: EmailMessage) -> int:
    return int(str(message["X-PenguinMails-Notice"]).rpartition("=")[2])


async def notice_rows(db: asyncpg.Pool, tenant_id: uuid.UUID) -> list[asyncpg.Record]:
    async with tenant_connection(db, tenant_id) as conn:
        return list(await conn.fetch("SELECT * FROM billing_notices ORDER BY period, threshold"))


async def fresh_tenant(api: client.CustomObjectsApi, name: str, tier: str) -> None:
    try:
        api.delete_cluster_custom_object(GROUP, VERSION, "tenants", name)
        await until(lambda: not _exists(api, name), f"old {name} gone")
    except ApiException as error:
        assert error.status == 404
    api.create_cluster_custom_object(GROUP, VERSION, "tenants", tenant_body(name, tier, None))


def _exists(api: client.CustomObjectsApi, name: str) -> bool:
    try:
        tenant(api, name)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


async def test_each_threshold_is_noticed_once_by_webhook_and_email(
    operator: OperatorProcess,
    custom_objects: client.CustomObjectsApi,
    db_pool: asyncpg.Pool,
    mail: tuple[SinkServer, PostfixServer],
    receiver: Receiver,
    loopback_allowed: EgressPolicy,
) -> None:
    api = custom_objects
    sink, _ = mail
    name = "notice-capped"
    contact = f"ops@{name}.example.com"
    await fresh_tenant(api, name, "starter")
    await until(
        lambda: (tenant(api, name).get("status") or {}).get("emailsSentThisMonth") == 0,
        "tenant counted",
    )
    row = await get_tenant(db_pool, name)
    assert row is not None
    tenant_id = row.id
    async with tenant_connection(db_pool, tenant_id) as conn:
        _, receiver.secret = await create_endpoint(
            conn, ADMIN, receiver.url, [EventType.USAGE_THRESHOLD], policy=loopback_allowed
        )
    now = datetime.now(UTC)
    period = month_start(now).date()

    async def reach(count: int) -> None:
        await until(
            lambda: tenant(api, name)["status"]["emailsSentThisMonth"] == count,
            f"{count} counted",
        )

    # 15 of 20 (75%), and last month's 30: no notice. The pass that wrote the count had
    # already recorded whatever it crossed.
    await record_sent(db_pool, tenant_id, 30, month_start(now) - timedelta(days=1))
    await record_sent(db_pool, tenant_id, 15, now)
    await reach(15)
    assert await notice_rows(db_pool, tenant_id) == []

    # 16 is 80%, 19 is 95%, 20 is 100%: one e-mail each, in that order.
    for added, count, threshold in ((1, 16, 80), (3, 19, 95), (1, 20, 100)):
        await record_sent(db_pool, tenant_id, added, now)
        await reach(count)
        arrived = await until(
            lambda t=threshold: [m for m in mails_to(sink, contact) if threshold_of(m) == t],
            f"the {threshold}% e-mail",
        )
        assert len(arrived) == 1, [m["Subject"] for m in arrived]

    # Two more messages and several passes later (forced by a spec change): nothing again.
    await record_sent(db_pool, tenant_id, 2, now)
    api.patch_cluster_custom_object(
        GROUP, VERSION, "tenants", name, {"spec": {"displayName": "Capped Inc"}}
    )
    await until(
        lambda: (
            (t := tenant(api, name))["status"].get("observedGeneration")
            == t["metadata"]["generation"]
            and t["status"]["emailsSentThisMonth"] == 22
        ),
        "a pass after the last message",
    )
    rows = await notice_rows(db_pool, tenant_id)
    assert [(r["period"], r["threshold"], r["sent"]) for r in rows] == [
        (period, 80, 16),
        (period, 95, 19),
        (period, 100, 20),
    ]
    assert all(r["email_sent_at"] is not None and r["email_attempts"] == 1 for r in rows)
    messages = mails_to(sink, contact)
    print(f"notices e-mailed to {contact}: {[str(m['Subject']) for m in messages]}")
    assert [threshold_of(m) for m in messages] == [80, 95, 100]
    assert [header(m, "Message-ID") for m in messages] == [r["email_message_id"] for r in rows]
    last = messages[-1]
    assert str(last["From"]) == FROM and str(last["To"]) == contact
    assert str(last["Auto-Submitted"]) == "auto-generated"
    body = last.get_content()
    assert "sent 20 of the 20 messages its starter plan allows" in body
    assert "New sends are stopped until" in body and f"upgrade the plan: open {BILLING_URL}" in body
    assert "TierLimitReached" in body
    assert "At 20 messages new sends stop" in messages[0].get_content()

    # The webhook: one event per threshold, delivered by the dispatcher, signed, with the
    # figures; its webhook-id is the one the row (and the e-mail's header) recorded.
    dispatcher = Dispatcher(db_pool)
    try:
        for _ in range(10):
            if not await dispatcher.deliver_due(tenant_id):
                break
    finally:
        await dispatcher.aclose()
    print(f"usage.threshold events received: {[p['data'] for _, p in receiver.events()]}")
    assert [p["type"] for _, p in receiver.events()] == ["usage.threshold"] * 3
    assert [hook_id for hook_id, _ in receiver.events()] == [r["webhook_event_id"] for r in rows]
    assert [header(m, "X-PenguinMails-Webhook-Id") for m in messages] == [
        r["webhook_event_id"] for r in rows
    ]
    first = receiver.events()[0][1]["data"]
    assert first == {
        "tenant": name,
        "tier": "starter",
        "threshold": 80,
        "sent": 16,
        "allowance": 20,
        "overageAllowed": False,
        "period": f"{period:%Y-%m}",
        "periodStart": f"{period.isoformat()}T00:00:00Z",
        "periodEnd": f"{notices.next_period(period).isoformat()}T00:00:00Z",
    }


async def test_overage_plan_jumping_past_every_threshold_says_overage_is_billed(
    operator: OperatorProcess,
    custom_objects: client.CustomObjectsApi,
    db_pool: asyncpg.Pool,
    mail: tuple[SinkServer, PostfixServer],
) -> None:
    """From 0 to 12 of 10 in one step: each threshold is still noticed once; at 100% the plan
    allows overage, so the notice says sending goes on and the excess is billed."""
    api = custom_objects
    sink, _ = mail
    name = "notice-metered"
    contact = f"ops@{name}.example.com"
    await fresh_tenant(api, name, "business")
    await until(
        lambda: (tenant(api, name).get("status") or {}).get("emailsSentThisMonth") == 0,
        "tenant counted",
    )
    row = await get_tenant(db_pool, name)
    assert row is not None
    await record_sent(db_pool, row.id, 12, datetime.now(UTC))
    messages = await until(
        lambda: len(found := mails_to(sink, contact)) >= 3 and found, "three notices"
    )
    await until(lambda: tenant(api, name)["status"]["emailsSentThisMonth"] == 12, "12 counted")
    assert sorted(threshold_of(m) for m in messages) == [80, 95, 100]
    (last,) = [m for m in messages if threshold_of(m) == 100]
    body = last.get_content()
    print(f"100% notice of an overage plan: {last['Subject']!s}")
    assert "overage is billed" in str(last["Subject"])
    assert "sending continues, and every message past 10 this month is billed as overage" in body
    assert "stopped" not in body
    rows = await notice_rows(db_pool, row.id)
    assert [(r["threshold"], r["sent"], r["overage_allowed"]) for r in rows] == [
        (80, 12, True),
        (95, 12, True),
        (100, 12, True),
    ]
    # No endpoint subscribed: no event was stored for nobody.
    assert [r["webhook_event_id"] for r in rows] == [None, None, None]


async def test_two_replicas_and_a_crash_give_each_notice_once(
    db_pool: asyncpg.Pool,
    postgres_dsn: str,
    mail: tuple[SinkServer, PostfixServer],
    receiver: Receiver,
    loopback_allowed: EgressPolicy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two replicas pass over the same tenant at the same moment: three rows, three webhook
    events, three e-mails. Then the states a crash leaves: a claimed e-mail whose claim ran
    out is sent again, with the same Message-ID (at-least-once); one still claimed by a live
    replica is left to it; one marked sent is never sent again."""
    sink, relay = mail
    for key, value in notice_settings(relay).items():
        monkeypatch.setenv(key, value)
    settings = NoticeSettings.from_env()
    name = f"notice-race-{uuid.uuid4().hex[:6]}"
    contact = f"ops@{name}.example.com"
    tenant_id = await upsert_tenant(
        db_pool,
        name=name,
        tier="starter",
        namespace=f"tenant-{name}",
        display_name=None,
        contact_email=contact,
        suspended=False,
    )
    async with tenant_connection(db_pool, tenant_id) as conn:
        _, receiver.secret = await create_endpoint(
            conn, ADMIN, receiver.url, [EventType.USAGE_THRESHOLD], policy=loopback_allowed
        )
    period = month_start(datetime.now(UTC)).date()
    allowance = Allowance(20, overage_allowed=False)
    other_replica = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=2)
    try:
        results = await asyncio.gather(
            *(
                notices.notify(
                    pool,
                    tenant_id,
                    tenant=name,
                    tier="starter",
                    contact_email=contact,
                    sent=20,
                    allowance=allowance,
                    period=period,
                    settings=settings,
                )
                for pool in (db_pool, other_replica)
            )
        )
    finally:
        await other_replica.close()
    recorded = sorted(n.threshold for result in results for n in result)
    print(f"thresholds recorded by the two replicas: {[[n.threshold for n in r] for r in results]}")
    assert recorded == [80, 95, 100]
    messages = await until(
        lambda: len(found := mails_to(sink, contact)) >= 3 and found, "three e-mails"
    )
    rows = await notice_rows(db_pool, tenant_id)
    assert [r["email_attempts"] for r in rows] == [1, 1, 1]
    async with tenant_connection(db_pool, tenant_id) as conn:
        events = await conn.fetchval(
            "SELECT count(*) FROM webhook_events WHERE event_type = 'usage.threshold'"
        )
    assert events == 3

    # The crash: the 95% e-mail was claimed, accepted by the relay, and its replica died before
    # marking it sent, long enough ago for the claim to have run out. The 100% one is claimed
    # by a replica still sending it.
    async with tenant_connection(db_pool, tenant_id) as conn:
        await conn.execute(
            "UPDATE billing_notices SET email_sent_at = NULL, "
            "email_claimed_until = now() - interval '1 second' WHERE threshold = 95"
        )
        await conn.execute(
            "UPDATE billing_notices SET email_sent_at = NULL, "
            "email_claimed_until = now() + interval '4 minutes' WHERE threshold = 100"
        )
    again = await notices.notify(
        db_pool,
        tenant_id,
        tenant=name,
        tier="starter",
        contact_email=contact,
        sent=21,
        allowance=allowance,
        period=period,
        settings=settings,
    )
    assert again == []
    resent = await until(
        lambda: len(found := mails_to(sink, contact)) >= 4 and found, "the 95% e-mail again"
    )
    await asyncio.sleep(2)  # anything more would have reached the sink by now: the relay is local
    final = mails_to(sink, contact)
    print(f"e-mails after the crash: {[threshold_of(m) for m in final]}")
    assert [threshold_of(m) for m in final] == [*(threshold_of(m) for m in messages), 95]
    assert header(resent[3], "Message-ID") == rows[1]["email_message_id"]
    rows = await notice_rows(db_pool, tenant_id)
    assert [r["email_attempts"] for r in rows] == [1, 2, 1]
    assert rows[2]["email_sent_at"] is None and rows[2]["email_claimed_until"] is not None


async def test_a_relay_that_is_not_trusted_gets_nothing_and_the_email_stays_owed(
    db_pool: asyncpg.Pool,
    mail: tuple[SinkServer, PostfixServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the relay's CA its certificate fails verification: nothing goes out in clear,
    the claim is given back at once, and the next pass with the CA sends the e-mail."""
    sink, relay = mail
    for key, value in notice_settings(relay).items():
        monkeypatch.setenv(key, value)
    trusted = NoticeSettings.from_env()
    monkeypatch.delenv("PM_NOTICE_SMTP_CA")
    untrusted = NoticeSettings.from_env()
    name = f"notice-tls-{uuid.uuid4().hex[:6]}"
    contact = f"ops@{name}.example.com"
    tenant_id = await upsert_tenant(
        db_pool,
        name=name,
        tier="starter",
        namespace=f"tenant-{name}",
        display_name=None,
        contact_email=contact,
        suspended=False,
    )
    period = month_start(datetime.now(UTC)).date()
    args: dict[str, Any] = {
        "tenant": name,
        "tier": "starter",
        "contact_email": contact,
        "sent": 16,
        "allowance": Allowance(20, overage_allowed=False),
        "period": period,
    }
    recorded = await notices.notify(db_pool, tenant_id, settings=untrusted, **args)
    assert [n.threshold for n in recorded] == [80]
    (row,) = await notice_rows(db_pool, tenant_id)
    assert row["email_attempts"] == 1 and row["email_sent_at"] is None
    assert row["email_claimed_until"] is None and row["email_error"] is None
    assert await notices.notify(db_pool, tenant_id, settings=trusted, **args) == []
    (arrived,) = await until(lambda: mails_to(sink, contact), "the e-mail over verified TLS")
    assert threshold_of(arrived) == 80
    (row,) = await notice_rows(db_pool, tenant_id)
    assert row["email_attempts"] == 2 and row["email_sent_at"] is not None


async def test_processed_stripe_events_are_purged_after_the_default_retention(
    plans: None,
    operator_process: OperatorFactory,
    db_pool: asyncpg.Pool,
) -> None:
    """The operator's periodic purge at its defaults (30 days, first pass at start): an event
    processed 31 days ago goes, one processed 29 days ago and one just now stay."""
    assert timedelta(days=30) == BILLING_EVENT_RETENTION
    now = datetime.now(UTC)
    stamp = uuid.uuid4().hex[:8]
    ages = {"old": timedelta(days=31), "recent": timedelta(days=29), "new": timedelta(0)}
    for label, age in ages.items():
        await db_pool.execute(
            "INSERT INTO billing_events (event_id, type, created, received_at, outcome) "
            "VALUES ($1, 'invoice.paid', $2, $2, 'applied: test')",
            f"evt_purge{stamp}{label}",
            now - age,
        )

    async def kept() -> set[str]:
        rows = await db_pool.fetch(
            "SELECT event_id FROM billing_events WHERE event_id LIKE $1", f"evt_purge{stamp}%"
        )
        return {r["event_id"].removeprefix(f"evt_purge{stamp}") for r in rows}

    handle = operator_process()
    try:
        # The operator logs the purge once its DELETE has committed.
        await until(
            lambda: "Stripe events processed more than 30 days" in handle.log(), "the purge"
        )
        remaining = await kept()
        print(f"billing events kept after the purge: {sorted(remaining)}")
        assert remaining == {"recent", "new"}
    finally:
        handle.stop()
    handle.assert_no_errors()
