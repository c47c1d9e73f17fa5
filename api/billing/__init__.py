"""Billing with Stripe: plans as data, the customer's flows, signed webhooks driving the Tenant.

- `plans`: each tier's Stripe Prices, monthly allowance and overage rule (table billing_plans).
- `client`: the one way to build a `StripeClient` (its base address comes from the settings).
- `flows`: Checkout, Customer Portal, change plan, cancel at period end, invoices.
- `webhook`: signature check, the event log, ordering, and the subscription state machine.
- `tenants`: the Tenant changes billing makes, through the API server.
- `webhook_route`: POST /v1/billing/webhook as a FastAPI router.
- `usage`: overage reported to Stripe's meter, once per batch.

See docs/billing.md.
"""
