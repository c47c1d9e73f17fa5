"""What a customer does with billing, as calls to Stripe (tested against stripe-mock).

Every call goes through the one `StripeClient` of `client.stripe_client`. The tenant's name
travels in the Checkout Session (`client_reference_id`) and in the subscription's metadata, so
the webhook knows which Tenant each event is about.

Retries: the client retries a failed call with one idempotency key it makes per call, so a lost
answer never acts twice. A caller that retries on its own (the HTTP API after a timeout) passes
the key of the customer's request as `idempotency_key`. No key is derived from the change itself:
changing to a plan, back and to it again within Stripe's 24 hours would replay the first answer
and do nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from stripe import StripeClient

from penguinmails.api.billing.plans import Interval, Plan
from penguinmails.common.settings import StripeSettings

TENANT_METADATA_KEY = "tenant"
"""Metadata key of the Checkout Session and the subscription naming the Tenant they pay for."""


async def start_checkout(
    stripe: StripeClient,
    settings: StripeSettings,
    *,
    tenant: str,
    plan: Plan,
    interval: Interval,
    contact_email: str,
    customer_id: str | None,
) -> str:
    """A Checkout Session subscribing `tenant` to `plan`; returns the URL to send the customer to.

    An existing Stripe customer is reused (one customer per tenant); otherwise Checkout creates
    one from the contact e-mail.
    """
    params: dict[str, Any] = {
        "mode": "subscription",
        "line_items": [{"price": plan.price(interval), "quantity": 1}],
        "success_url": settings.checkout_success_url,
        "cancel_url": settings.checkout_cancel_url,
        "client_reference_id": tenant,
        "metadata": {TENANT_METADATA_KEY: tenant},
        "subscription_data": {"metadata": {TENANT_METADATA_KEY: tenant}},
    }
    if customer_id:
        params["customer"] = customer_id
    else:
        params["customer_email"] = contact_email
    session = await stripe.v1.checkout.sessions.create_async(params)  # type: ignore[arg-type]
    return str(session.url)


async def open_portal(stripe: StripeClient, settings: StripeSettings, *, customer_id: str) -> str:
    """A Customer Portal session (payment methods, invoices, cancel); returns its URL."""
    session = await stripe.v1.billing_portal.sessions.create_async(
        {"customer": customer_id, "return_url": settings.portal_return_url}
    )
    return str(session.url)


def _options(idempotency_key: str | None) -> dict[str, Any]:
    return {"idempotency_key": idempotency_key} if idempotency_key else {}


async def change_plan(
    stripe: StripeClient,
    *,
    subscription_id: str,
    plan: Plan,
    interval: Interval,
    idempotency_key: str | None = None,
) -> str:
    """Move the subscription to `plan` (upgrade or downgrade), prorated; returns its status.

    The Tenant's tier follows from the customer.subscription.updated event Stripe sends, so a
    change that fails at Stripe never changes the tier.
    """
    subscription = await stripe.v1.subscriptions.retrieve_async(subscription_id)
    item = subscription["items"]["data"][0]
    price = plan.price(interval)
    updated = await stripe.v1.subscriptions.update_async(
        subscription_id,
        {
            "items": [{"id": str(item["id"]), "price": price}],
            "proration_behavior": "create_prorations",
        },
        _options(idempotency_key),  # type: ignore[arg-type]
    )
    return str(updated.status)


async def cancel_at_period_end(
    stripe: StripeClient, *, subscription_id: str, idempotency_key: str | None = None
) -> bool:
    """Cancel when the paid period ends (the tenant keeps sending until then)."""
    updated = await stripe.v1.subscriptions.update_async(
        subscription_id,
        {"cancel_at_period_end": True},
        _options(idempotency_key),  # type: ignore[arg-type]
    )
    return bool(updated.cancel_at_period_end)


@dataclass(frozen=True)
class InvoiceSummary:
    """An invoice as the customer sees it in the list."""

    id: str
    number: str | None
    status: str | None
    amount_due: int
    """In the smallest unit of `currency` (cents)."""
    currency: str
    created: datetime
    hosted_invoice_url: str | None


async def list_invoices(
    stripe: StripeClient, *, customer_id: str, limit: int = 24
) -> list[InvoiceSummary]:
    """The customer's most recent invoices, newest first."""
    page = await stripe.v1.invoices.list_async({"customer": customer_id, "limit": limit})
    return [
        InvoiceSummary(
            id=str(invoice.id),
            number=invoice.number,
            status=invoice.status,
            amount_due=int(invoice.amount_due),
            currency=str(invoice.currency),
            created=datetime.fromtimestamp(int(invoice.created), UTC),
            hosted_invoice_url=invoice.hosted_invoice_url,
        )
        for invoice in page.data
    ]
