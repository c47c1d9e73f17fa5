"""The customer's billing flows against stripe-mock (Stripe's own mock, which validates every
request against Stripe's OpenAPI spec and refuses what the real API would refuse)."""

from __future__ import annotations

from dataclasses import replace

import asyncpg
import pytest
import stripe

from penguinmails.api.billing import flows
from penguinmails.api.billing.client import stripe_client
from penguinmails.api.billing.plans import (
    Interval,
    Plan,
    allowance_for,
    get_plan,
    plan_for_price,
    put_plan,
)
from penguinmails.api.v1alpha1.tiers import TIERS, Tier
from penguinmails.common.settings import StripeSettings
from penguinmails.devstack.stripe_mock import StripeMock

pytestmark = pytest.mark.integration

STARTER = Plan(Tier.STARTER, "price_flowsStarterM", "price_flowsStarterY", 10_000, False)
BUSINESS = Plan(Tier.BUSINESS, "price_flowsBusinessM", None, 500_000, True)


@pytest.fixture(scope="module")
def settings(stripe_mock: StripeMock) -> StripeSettings:
    return StripeSettings(
        api_key="sk_test_flows",
        webhook_secret="whsec_flows",
        api_base=stripe_mock.url,
        webhook_tolerance_seconds=300,
        grace_seconds=3 * 86400.0,
        meter_event_name="penguinmails_emails",
        checkout_success_url="https://app.example.com/billing?ok",
        checkout_cancel_url="https://app.example.com/billing?cancel",
        portal_return_url="https://app.example.com/billing",
    )


async def test_plans_are_data(db_pool: asyncpg.Pool) -> None:
    await put_plan(db_pool, STARTER)
    await put_plan(db_pool, BUSINESS)
    assert await get_plan(db_pool, "starter") == STARTER
    assert await plan_for_price(db_pool, "price_flowsStarterY") == STARTER
    assert await plan_for_price(db_pool, "price_unknown") is None
    # An administrator edits a plan: the allowance follows.
    await put_plan(db_pool, replace(BUSINESS, emails_per_month=400_000))
    assert (await allowance_for(db_pool, Tier.BUSINESS)).emails_per_month == 400_000
    await put_plan(db_pool, BUSINESS)
    # A tier without a plan keeps its tier's allowance and no overage.
    enterprise = await allowance_for(db_pool, Tier.ENTERPRISE)
    assert enterprise.emails_per_month == TIERS[Tier.ENTERPRISE].emails_per_month
    assert not enterprise.overage_allowed
    with pytest.raises(ValueError, match="interval: the business plan has no yearly price"):
        BUSINESS.price(Interval.YEARLY)
    with pytest.raises(asyncpg.CheckViolationError):
        await put_plan(db_pool, replace(STARTER, price_monthly="monthly-starter"))
    await db_pool.execute("DELETE FROM billing_plans")


async def test_checkout_portal_change_cancel_invoices(settings: StripeSettings) -> None:
    client = stripe_client(settings)
    url = await flows.start_checkout(
        client,
        settings,
        tenant="acme",
        plan=STARTER,
        interval=Interval.YEARLY,
        contact_email="ops@acme.example.com",
        customer_id=None,
    )
    assert url.startswith("https://checkout.stripe.com/")
    url = await flows.start_checkout(
        client,
        settings,
        tenant="acme",
        plan=STARTER,
        interval=Interval.MONTHLY,
        contact_email="ops@acme.example.com",
        customer_id="cus_flows1",
    )
    assert url.startswith("https://checkout.stripe.com/")
    portal = await flows.open_portal(client, settings, customer_id="cus_flows1")
    assert portal.startswith("https://")
    status = await flows.change_plan(
        client, subscription_id="sub_flows1", plan=BUSINESS, interval=Interval.MONTHLY
    )
    assert status == "active"
    assert await flows.cancel_at_period_end(client, subscription_id="sub_flows1")
    invoices = await flows.list_invoices(client, customer_id="cus_flows1")
    print(f"invoices listed: {[(i.id, i.status, i.amount_due, i.currency) for i in invoices]}")
    assert invoices and all(i.id.startswith("in_") and i.currency for i in invoices)


async def test_a_request_stripe_would_refuse_fails(settings: StripeSettings) -> None:
    """stripe-mock validates requests: a wrong parameter fails as it would at Stripe."""
    client = stripe_client(settings)
    with pytest.raises(stripe.InvalidRequestError, match="proration_behavior"):
        await client.v1.subscriptions.update_async(
            "sub_flows1",
            {"proration_behavior": "sometimes"},
        )
