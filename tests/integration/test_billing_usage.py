"""Usage per month from the ledger, the allowance gate and overage reported to stripe-mock.

The operator runs as in production (a process under kopf) with Stripe pointed at stripe-mock.
The sent messages are ledger rows as the senders record them (state sent, sent_at), written
here directly: the allowance is a plan's data, so a plan of a few messages makes the limit
reachable without sending thousands of messages.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from penguinmails.api.billing.plans import Plan, put_plan
from penguinmails.api.v1alpha1.tiers import Tier
from penguinmails.common.db import tenant_connection
from penguinmails.common.db.tenants import get_tenant
from penguinmails.devstack.stripe_mock import StripeMock
from penguinmails.operator import usage
from penguinmails.operator.usage import month_start
from tests.integration.conftest import GROUP, VERSION, OperatorFactory, OperatorProcess, wait_for

pytestmark = pytest.mark.integration

CAPPED = Plan(Tier.STARTER, "price_useStarterM", None, 3, overage_allowed=False)
METERED = Plan(Tier.BUSINESS, "price_useBusinessM", None, 2, overage_allowed=True)
METER = "penguinmails_emails"


@pytest.fixture(scope="module")
async def plans(db_pool: asyncpg.Pool) -> AsyncIterator[None]:
    await put_plan(db_pool, CAPPED)
    await put_plan(db_pool, METERED)
    yield
    # Plans of a few messages would stop other modules' campaigns: gone after this module.
    await db_pool.execute("DELETE FROM billing_plans WHERE tier IN ('starter', 'business')")


@pytest.fixture(scope="module")
def operator(
    plans: None, operator_process: OperatorFactory, stripe_mock: StripeMock
) -> Iterator[OperatorProcess]:
    handle = operator_process(
        PM_STRIPE_API_KEY="sk_test_usage",
        PM_STRIPE_API_BASE=stripe_mock.url,
        PM_STRIPE_METER_EVENT=METER,
    )
    yield handle
    handle.stop()
    handle.assert_no_errors()


def tenant_body(name: str, tier: str, billing: dict[str, str] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "tier": tier,
        "contactEmail": f"ops@{name}.example.com",
        "postalAddress": {"street": "1 Main St", "city": "Springfield", "country": "US"},
    }
    if billing:
        spec["billing"] = billing
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Tenant",
        "metadata": {"name": name},
        "spec": spec,
    }


def campaign_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Campaign",
        "metadata": {"name": name},
        "spec": {
            "sendingDomainRef": {"name": "not-yet"},
            "from": {"address": "jane@not-yet.example", "name": "Jane"},
            "subject": "Hi",
            "text": "Hello",
            "audience": {"lists": ["leads"]},
        },
    }


def tenant(api: client.CustomObjectsApi, name: str) -> dict[str, Any]:
    return dict(api.get_cluster_custom_object(GROUP, VERSION, "tenants", name))


def preflight(api: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, "campaigns", name)
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item["type"] == "Preflight":
            return dict(item)
    return {}


async def record_sent(db: asyncpg.Pool, tenant_id: uuid.UUID, count: int, when: datetime) -> None:
    """`count` deliveries the senders recorded as sent at `when`."""
    async with tenant_connection(db, tenant_id) as conn:
        campaign = uuid.uuid4()
        await conn.execute(
            "INSERT INTO campaigns (uid, namespace, name, spec) VALUES ($1, 'x', $2, '{}')",
            campaign,
            f"usage-{campaign}",
        )
        for _ in range(count):
            await conn.execute(
                "INSERT INTO deliveries (campaign_uid, address_hash, state, sent_at) "
                "VALUES ($1, $2, 'sent', $3)",
                campaign,
                hashlib.sha256(uuid.uuid4().bytes).digest(),
                when,
            )


async def until(predicate: Any, what: str) -> Any:
    """`wait_for` off the event loop (the operator needs a few resync passes of 3 s)."""
    return await asyncio.to_thread(wait_for, predicate, timeout=90, what=what)


async def test_allowance_closes_the_gate_and_overage_reaches_stripe_once_per_batch(
    operator: OperatorProcess,
    custom_objects: client.CustomObjectsApi,
    db_pool: asyncpg.Pool,
    stripe_mock: StripeMock,
) -> None:
    api = custom_objects
    for name in ("capped", "metered"):
        try:
            api.delete_cluster_custom_object(GROUP, VERSION, "tenants", name)
        except ApiException as error:
            assert error.status == 404
    billing = {"stripeCustomerId": "cus_metered", "stripeSubscriptionId": "sub_metered"}
    api.create_cluster_custom_object(
        GROUP, VERSION, "tenants", tenant_body("capped", "starter", None)
    )
    api.create_cluster_custom_object(
        GROUP, VERSION, "tenants", tenant_body("metered", "business", billing)
    )
    rows = {}
    for name in ("capped", "metered"):
        await until(
            lambda n=name: (tenant(api, n).get("status") or {}).get("emailsSentThisMonth") == 0,
            f"{name} counted",
        )
        row = await get_tenant(db_pool, name)
        assert row is not None
        rows[name] = row.id

    now = datetime.now(UTC)
    # Last month's messages do not count; two this month leave the gate open.
    await record_sent(db_pool, rows["capped"], 5, month_start(now) - timedelta(days=1))
    await record_sent(db_pool, rows["capped"], 2, now)
    await until(lambda: tenant(api, "capped")["status"]["emailsSentThisMonth"] == 2, "2 counted")
    api.create_namespaced_custom_object(
        GROUP, VERSION, "tenant-capped", "campaigns", campaign_body("news")
    )
    await until(
        lambda: preflight(api, "tenant-capped", "news").get("reason") == "SendingDomainNotFound",
        "gate open",
    )

    # The third message reaches the starter plan's allowance: the gate closes and says why.
    await record_sent(db_pool, rows["capped"], 1, now)
    closed = await until(
        lambda: (
            (p := preflight(api, "tenant-capped", "news")).get("reason") == "TierLimitReached" and p
        ),
        "gate closed at the allowance",
    )
    assert closed["status"] == "False"
    assert closed["message"].startswith(
        "the tenant sent 3 of the 3 messages its starter plan allows this month; new sends "
        "resume on the 1st (UTC), or upgrade the plan now (billing portal or change plan)"
    )

    # Overage allowed: past its allowance of 2 the business tenant keeps its gate open...
    await record_sent(db_pool, rows["metered"], 5, now)
    await until(lambda: tenant(api, "metered")["status"]["emailsSentThisMonth"] == 5, "5 counted")
    api.create_namespaced_custom_object(
        GROUP, VERSION, "tenant-metered", "campaigns", campaign_body("news")
    )
    await until(
        lambda: preflight(api, "tenant-metered", "news").get("reason") == "SendingDomainNotFound",
        "metered gate open",
    )
    period = month_start(now).date()

    async def reported() -> int:
        value = await db_pool.fetchval(
            "SELECT reported_up_to FROM billing_usage_reports "
            "WHERE tenant = 'metered' AND period = $1",
            period,
        )
        return int(value or 0)

    # ...and its overage reaches Stripe: 3 messages, then 2 more in a second batch.
    async def wait_reported(expected: int) -> None:
        for _ in range(360):
            if await reported() == expected:
                return
            await asyncio.sleep(0.25)
        raise AssertionError(f"overage reported up to {await reported()}, expected {expected}")

    await wait_reported(3)
    await record_sent(db_pool, rows["metered"], 2, now)
    await wait_reported(5)
    # A pass after both batches (forced by a spec change) sends nothing again: each batch
    # reached the mock exactly once.
    api.patch_cluster_custom_object(
        GROUP, VERSION, "tenants", "metered", {"spec": {"displayName": "Metered Inc"}}
    )
    await until(
        lambda: (
            (t := tenant(api, "metered"))["status"].get("observedGeneration")
            == t["metadata"]["generation"]
            and t["status"]["emailsSentThisMonth"] == 7
        ),
        "a pass after the second batch",
    )
    calls = [c for c in stripe_mock.requests("/v1/billing/meter_events") if "cus_metered" in c]
    print(f"meter events sent for metered: {calls}")
    month = f"{period:%Y-%m}"
    assert len(calls) == 2
    assert f"identifier:metered-{month}-0-3" in calls[0] and "value:3" in calls[0]
    assert f"identifier:metered-{month}-3-5" in calls[1] and "value:2" in calls[1]


async def test_a_batch_cut_short_by_a_crash_is_resent_as_the_same_batch(
    db_pool: asyncpg.Pool, stripe_mock: StripeMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator died after writing the batch (0, 4] and before recording Stripe's answer:
    the next pass sends that batch again, same identifier and value (Stripe keeps one), even
    though usage grew meanwhile; the growth goes in the next batch."""
    monkeypatch.setenv("PM_STRIPE_API_KEY", "sk_test_usage")
    monkeypatch.setenv("PM_STRIPE_API_BASE", stripe_mock.url)
    monkeypatch.setenv("PM_STRIPE_METER_EVENT", METER)
    usage._stripe.cache_clear()
    try:
        period = date(2026, 11, 1)
        await db_pool.execute(
            "INSERT INTO billing_usage_reports (tenant, period, reported_up_to, pending_up_to) "
            "VALUES ('crashed', $1, 0, 4)",
            period,
        )
        batches = [
            await usage.report_overage(
                db_pool, tenant="crashed", customer_id="cus_crashed", overage=9, period=period
            )
            for _ in range(3)
        ]
    finally:
        usage._stripe.cache_clear()
    assert batches == [4, 5, 0]
    calls = [c for c in stripe_mock.requests("/v1/billing/meter_events") if "cus_crashed" in c]
    print(f"meter events sent for crashed: {calls}")
    assert len(calls) == 2
    assert "identifier:crashed-2026-11-0-4" in calls[0] and "value:4" in calls[0]
    assert "identifier:crashed-2026-11-4-9" in calls[1] and "value:5" in calls[1]
