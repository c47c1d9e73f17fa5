-- Billing with Stripe (api/billing/, docs/billing.md). Platform tables: read and written by the
-- platform's login only (no tenant scope, no grants to the tenant roles).

-- Plans as data: what each tier costs in Stripe and what it allows per month. The technical
-- limits (quotas, object counts, sender size) stay in api/v1alpha1/tiers.py. Price ids belong
-- to a Stripe account, so platform administrators insert the rows; none are seeded.
CREATE TABLE billing_plans (
    tier              text        PRIMARY KEY
                                  CHECK (tier IN ('starter', 'professional', 'business',
                                                  'enterprise')),
    price_monthly     text        NOT NULL UNIQUE CHECK (price_monthly LIKE 'price\_%'),
    price_yearly      text        UNIQUE CHECK (price_yearly LIKE 'price\_%'),
    emails_per_month  integer     NOT NULL CHECK (emails_per_month > 0),
    -- Past the allowance: keep sending and report the overage to Stripe's meter (true), or
    -- stop new sends until the next month or an upgrade (false).
    overage_allowed   boolean     NOT NULL DEFAULT false,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Every webhook event processed, keyed by Stripe's event id: a redelivery finds its row and is
-- not processed again.
CREATE TABLE billing_events (
    event_id     text        PRIMARY KEY,
    type         text        NOT NULL,
    created      timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    outcome      text        NOT NULL
);

-- The newest state applied per subscription: an event older than `event_created` never
-- overrides it (Stripe does not deliver in order).
CREATE TABLE billing_subscriptions (
    subscription_id  text        PRIMARY KEY,
    customer_id      text        NOT NULL,
    tenant           text        NOT NULL,
    status           text        NOT NULL,
    price_id         text,
    event_created    timestamptz NOT NULL,
    event_id         text        NOT NULL,
    -- When the subscription last became past_due; the grace period runs from here.
    past_due_since   timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX billing_subscriptions_by_tenant ON billing_subscriptions (tenant);

-- Overage reported to Stripe's meter, per tenant and calendar month. A batch (reported_up_to,
-- pending_up_to] is written here before it is sent and cleared once Stripe accepted it, so a
-- crash in between resends the same batch with the same identifier (Stripe keeps the first).
CREATE TABLE billing_usage_reports (
    tenant           text    NOT NULL,
    period           date    NOT NULL,
    reported_up_to   bigint  NOT NULL DEFAULT 0 CHECK (reported_up_to >= 0),
    pending_up_to    bigint  CHECK (pending_up_to > reported_up_to),
    PRIMARY KEY (tenant, period)
);

-- Usage per calendar month: one aggregate over the tenant's messages sent since the 1st.
CREATE INDEX deliveries_sent_at ON deliveries (tenant_id, sent_at) WHERE sent_at IS NOT NULL;
