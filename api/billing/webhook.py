"""Stripe webhook events: verified, processed once, in order, onto the Tenant.

1. `verify`: the signature with the official client (`stripe.Webhook.construct_event`), which
   also refuses a signature timestamp older than the tolerance (a replayed capture).
2. `process`: one transaction per event. The event id goes into `billing_events` first: a
   redelivery finds it there and does nothing ("duplicate"). The subscription's newest applied
   state lives in `billing_subscriptions` with the creation time of the event that set it: an
   older event is recorded but changes nothing ("stale"), since Stripe does not deliver in order.
   The Tenant is patched inside the transaction, so a failed patch rolls the event back and
   Stripe's redelivery tries again.
3. The state machine (`desired`): trialing and active send at the price's tier; past_due keeps
   sending for the grace period, then suspends; unpaid, paused and canceled suspend, each with
   a reason that tells the customer what to do; a paid invoice resumes.

`expire_grace` suspends the past_due subscriptions whose grace period ended without any new
event; the webhook router runs it periodically (webhook_route.py).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg
import stripe

from penguinmails.api.billing.flows import TENANT_METADATA_KEY
from penguinmails.api.billing.plans import plan_for_price
from penguinmails.api.billing.tenants import SUSPEND_PREFIX, Desired, TenantWriter
from penguinmails.common.db import AnyConnection
from penguinmails.common.settings import StripeSettings

log = logging.getLogger(__name__)

Verdict = Literal["applied", "duplicate", "stale", "ignored"]

SUBSCRIPTION_EVENTS = frozenset(
    {
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "customer.subscription.paused",
        "customer.subscription.resumed",
    }
)


class WebhookRejectedError(Exception):
    """The delivery is not from Stripe or is too old: answered 400, nothing recorded."""


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    detail: str


def verify(payload: bytes, signature: str | None, settings: StripeSettings) -> dict[str, Any]:
    """The event of a delivery whose signature and timestamp hold, else WebhookRejectedError."""
    try:
        stripe.Webhook.construct_event(
            payload,
            signature,
            settings.webhook_secret,
            tolerance=settings.webhook_tolerance_seconds,
        )
    except stripe.SignatureVerificationError as error:
        # The client's message says which check failed (no signature, timestamp outside the
        # tolerance, no matching signature); it never contains the secret.
        raise WebhookRejectedError(f"signature refused: {error.user_message or error}") from None
    except ValueError as error:
        raise WebhookRejectedError(f"body is not a Stripe event: {error}") from None
    event: dict[str, Any] = json.loads(payload)
    return event


def _timestamp(value: Any) -> datetime:
    return datetime.fromtimestamp(int(value), UTC)


def _grace_reason(since: datetime, grace: timedelta) -> str:
    return (
        f"{SUSPEND_PREFIX}the payment of the latest invoice failed on {since:%Y-%m-%d} and the "
        f"{_days(grace)} grace period is over; update the payment method in the billing "
        "portal to resume sending"
    )


def _days(grace: timedelta) -> str:
    seconds = grace.total_seconds()
    if seconds >= 86400:
        return f"{seconds / 86400:g}-day"
    return f"{seconds:g}-second"


REASONS = {
    "unpaid": f"{SUSPEND_PREFIX}invoices are unpaid; pay them in the billing portal to resume "
    "sending",
    "paused": f"{SUSPEND_PREFIX}the subscription is paused (the trial ended without a payment "
    "method); add one in the billing portal to resume sending",
    "canceled": f"{SUSPEND_PREFIX}the subscription was canceled; subscribe to a plan again to "
    "resume sending",
}


def desired(
    status: str, past_due_since: datetime | None, *, now: datetime, grace: timedelta
) -> tuple[bool | None, str | None]:
    """(suspended, reason) for a subscription status; None: leave the Tenant's as it is."""
    if status in ("active", "trialing"):
        return False, None
    if status == "past_due":
        since = past_due_since or now
        if now - since >= grace:
            return True, _grace_reason(since, grace)
        return False, None  # within the grace period: keep sending while Stripe retries
    if status in REASONS:
        return True, REASONS[status]
    return None, None  # incomplete, incomplete_expired: nothing was ever granted


async def process(
    pool: asyncpg.Pool,
    tenants: TenantWriter,
    settings: StripeSettings,
    event: dict[str, Any],
    *,
    now: datetime | None = None,
) -> Outcome:
    """Process a verified event once; see the module docstring."""
    now = now or datetime.now(UTC)
    event_id = str(event["id"])
    kind = str(event["type"])
    created = _timestamp(event["created"])
    async with pool.acquire() as conn, conn.transaction():
        # A concurrent delivery of the same event waits here until this one commits.
        first = await conn.fetchval(
            "INSERT INTO billing_events (event_id, type, created, outcome) "
            "VALUES ($1, $2, $3, 'processing') ON CONFLICT DO NOTHING RETURNING true",
            event_id,
            kind,
            created,
        )
        if not first:
            return Outcome("duplicate", f"event {event_id} was already processed")
        outcome = await _dispatch(conn, tenants, settings, event, created, now)
        await conn.execute(
            "UPDATE billing_events SET outcome = $2 WHERE event_id = $1",
            event_id,
            f"{outcome.verdict}: {outcome.detail}",
        )
    log.info("stripe event %s (%s): %s: %s", event_id, kind, outcome.verdict, outcome.detail)
    return outcome


async def _dispatch(
    conn: AnyConnection,
    tenants: TenantWriter,
    settings: StripeSettings,
    event: dict[str, Any],
    created: datetime,
    now: datetime,
) -> Outcome:
    kind = str(event["type"])
    obj: dict[str, Any] = event["data"]["object"]
    if kind == "checkout.session.completed":
        return await _checkout_completed(conn, tenants, settings, obj, now)
    if kind in SUBSCRIPTION_EVENTS:
        return await _subscription_changed(conn, tenants, settings, event, obj, created, now)
    if kind in ("invoice.paid", "invoice.payment_failed"):
        return await _invoice(conn, tenants, settings, event, obj, created, now)
    return Outcome("ignored", f"{kind} is not an event billing acts on")


async def _checkout_completed(
    conn: AnyConnection,
    tenants: TenantWriter,
    settings: StripeSettings,
    session: dict[str, Any],
    now: datetime,
) -> Outcome:
    tenant = session.get("client_reference_id") or (session.get("metadata") or {}).get(
        TENANT_METADATA_KEY
    )
    subscription_id = session.get("subscription")
    customer_id = session.get("customer")
    if session.get("mode") != "subscription" or not (tenant and subscription_id and customer_id):
        return Outcome("ignored", "not a subscription Checkout of a tenant")
    detail = await tenants.link(
        str(tenant), customer_id=str(customer_id), subscription_id=str(subscription_id)
    )
    # Subscription events may have come before this one: apply what they recorded.
    row = await conn.fetchrow(
        "SELECT * FROM billing_subscriptions WHERE subscription_id = $1", subscription_id
    )
    if row is not None:
        detail += "; " + await _apply(conn, tenants, settings, row, now)
    return Outcome("applied", detail)


def _price_of(subscription: dict[str, Any]) -> str | None:
    items = ((subscription.get("items") or {}).get("data")) or []
    if not items:
        return None
    price = items[0].get("price") or {}
    return str(price["id"]) if isinstance(price, dict) and price.get("id") else None


async def _subscription_changed(
    conn: AnyConnection,
    tenants: TenantWriter,
    settings: StripeSettings,
    event: dict[str, Any],
    subscription: dict[str, Any],
    created: datetime,
    now: datetime,
) -> Outcome:
    subscription_id = str(subscription["id"])
    status = str(subscription["status"])
    row = await conn.fetchrow(
        "SELECT * FROM billing_subscriptions WHERE subscription_id = $1 FOR UPDATE",
        subscription_id,
    )
    if row is not None and created < row["event_created"]:
        return Outcome(
            "stale",
            f"{subscription_id} {status} at {created:%Y-%m-%dT%H:%M:%SZ} is older than the "
            f"{row['status']} applied from {row['event_id']}",
        )
    tenant = (subscription.get("metadata") or {}).get(TENANT_METADATA_KEY) or (
        row["tenant"] if row is not None else None
    )
    if not tenant:
        return Outcome("ignored", f"{subscription_id} names no tenant in its metadata")
    # The grace period runs from the first past_due event, not from each retry's.
    previous = row["past_due_since"] if row is not None else None
    past_due_since = (previous or created) if status == "past_due" else None
    row = await conn.fetchrow(
        """
        INSERT INTO billing_subscriptions (subscription_id, customer_id, tenant, status,
            price_id, event_created, event_id, past_due_since)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT (subscription_id) DO UPDATE SET
            customer_id = EXCLUDED.customer_id, tenant = EXCLUDED.tenant,
            status = EXCLUDED.status, price_id = COALESCE(EXCLUDED.price_id,
            billing_subscriptions.price_id), event_created = EXCLUDED.event_created,
            event_id = EXCLUDED.event_id, past_due_since = EXCLUDED.past_due_since,
            updated_at = now()
        RETURNING *
        """,
        subscription_id,
        str(subscription.get("customer") or ""),
        str(tenant),
        status,
        _price_of(subscription),
        created,
        str(event["id"]),
        past_due_since,
    )
    assert row is not None
    return Outcome("applied", await _apply(conn, tenants, settings, row, now))


def _invoice_subscription(invoice: dict[str, Any]) -> str | None:
    """The subscription an invoice bills (its place moved in API version 2025-03-31)."""
    details = ((invoice.get("parent") or {}).get("subscription_details")) or {}
    found = details.get("subscription") or invoice.get("subscription")
    return str(found) if found else None


async def _invoice(
    conn: AnyConnection,
    tenants: TenantWriter,
    settings: StripeSettings,
    event: dict[str, Any],
    invoice: dict[str, Any],
    created: datetime,
    now: datetime,
) -> Outcome:
    subscription_id = _invoice_subscription(invoice)
    if subscription_id is None:
        return Outcome("ignored", "the invoice bills no subscription")
    row = await conn.fetchrow(
        "SELECT * FROM billing_subscriptions WHERE subscription_id = $1 FOR UPDATE",
        subscription_id,
    )
    if row is None:
        return Outcome("ignored", f"no subscription event seen yet for {subscription_id}")
    if created < row["event_created"]:
        return Outcome("stale", f"{event['type']} is older than {row['event_id']}")
    paid = event["type"] == "invoice.paid"
    if paid:
        # A paid invoice settles what past_due or unpaid was about: the tenant sends again.
        status = "active" if row["status"] in ("past_due", "unpaid") else row["status"]
        since = None
    else:
        status = "past_due" if row["status"] in ("active", "trialing") else row["status"]
        since = row["past_due_since"] or (created if status == "past_due" else None)
    row = await conn.fetchrow(
        """
        UPDATE billing_subscriptions SET status = $2, past_due_since = $3, event_created = $4,
            event_id = $5, updated_at = now()
        WHERE subscription_id = $1 RETURNING *
        """,
        subscription_id,
        status,
        since,
        created,
        str(event["id"]),
    )
    assert row is not None
    return Outcome("applied", await _apply(conn, tenants, settings, row, now))


async def _apply(
    conn: AnyConnection,
    tenants: TenantWriter,
    settings: StripeSettings,
    row: asyncpg.Record,
    now: datetime,
) -> str:
    """Bring the subscription's Tenant to what its recorded state means."""
    grace = timedelta(seconds=settings.grace_seconds)
    suspended, reason = desired(row["status"], row["past_due_since"], now=now, grace=grace)
    plan = await plan_for_price(conn, row["price_id"]) if row["price_id"] else None
    tier = plan.tier if plan is not None and row["status"] in ("active", "trialing") else None
    detail = await tenants.apply(
        row["tenant"], row["subscription_id"], Desired(tier, suspended, reason)
    )
    if row["price_id"] and plan is None:
        detail += f" (price {row['price_id']} belongs to no plan: tier left as it is)"
    return detail


async def expire_grace(
    pool: asyncpg.Pool, tenants: TenantWriter, settings: StripeSettings, now: datetime | None = None
) -> list[str]:
    """Suspend the tenants whose past_due grace period ended; what was done, per tenant."""
    now = now or datetime.now(UTC)
    deadline = now - timedelta(seconds=settings.grace_seconds)
    done = []
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT * FROM billing_subscriptions "
            "WHERE status = 'past_due' AND past_due_since <= $1",
            deadline,
        )
        for row in rows:
            done.append(await _apply(conn, tenants, settings, row, now))
    return done
