-- 0011_billing_notices_role: usage notices at 80/95/100% of the month's allowance, and the
-- narrow login group of the API's billing code (docs/billing.md).

-- One row per notice: the unique key (tenant, period, threshold) is the "once per billing
-- period" rule. The operator inserts the row and, in the same transaction, queues the
-- `usage.threshold` webhook event (common/webhooks.py): both or neither, so the event is
-- stored exactly once whichever replica gets there first. The e-mail is an outside effect:
-- the row is its recorded intent, claimed with a lease before sending and marked sent after;
-- a crash in between leaves the claim to expire and the e-mail is sent again with the same
-- Message-ID (at-least-once, operator/notices.py).
-- Tenant-owned, under the same row-level security as the other tenant tables, and granted to
-- penguinmails_app only: a tenant's own login (its sender pods) can neither read nor forge or
-- suppress its notices.
CREATE TABLE billing_notices (
    tenant_id         uuid        NOT NULL DEFAULT current_tenant_id()
                                  REFERENCES tenants (id) ON DELETE CASCADE,
    -- The calendar month (UTC) the usage counts in: its first day.
    period            date        NOT NULL CHECK (extract(day FROM period) = 1),
    threshold         smallint    NOT NULL CHECK (threshold IN (80, 95, 100)),
    -- The figures when the threshold was crossed, as the notice tells them.
    sent              bigint      NOT NULL CHECK (sent >= 0),
    allowance         bigint      NOT NULL CHECK (allowance > 0),
    overage_allowed   boolean     NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- The webhook event (`msg_...`, its webhook-id), or NULL when no endpoint subscribed.
    webhook_event_id  text,
    -- The e-mail to spec.contactEmail: its stable Message-ID; NULL when no relay is configured
    -- (PM_NOTICE_SMTP_HOST empty), then no e-mail is owed.
    email_message_id  text        CHECK (length(email_message_id) <= 300),
    email_claimed_until timestamptz,
    email_attempts    integer     NOT NULL DEFAULT 0,
    email_sent_at     timestamptz,
    -- A permanent refusal (5xx) ends the retries; the relay's answer, never a secret.
    email_error       text        CHECK (length(email_error) <= 500),
    PRIMARY KEY (tenant_id, period, threshold)
);
CREATE INDEX billing_notices_email_owed ON billing_notices (tenant_id)
    WHERE email_message_id IS NOT NULL AND email_sent_at IS NULL AND email_error IS NULL;
ALTER TABLE billing_notices ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing_notices FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON billing_notices
    USING (tenant_id = (SELECT current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT current_tenant_id()));
REVOKE ALL ON billing_notices FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE ON billing_notices TO penguinmails_app;

-- Purging the processed-event log by age (operator/retention.py).
CREATE INDEX billing_events_received_at ON billing_events (received_at);

-- The API's billing code (api/billing/, PM_BILLING_DATABASE_URL) logs in as a member of this
-- group: the billing tables it reads and writes, nothing else. It reads no tenant row (the
-- Tenant comes from the API server), no contact, no delivery; it deletes nothing (the operator
-- purges old events) and never sees usage reports (the operator's).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'penguinmails_billing') THEN
        CREATE ROLE penguinmails_billing NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;
REVOKE ALL ON billing_plans, billing_events, billing_subscriptions, billing_usage_reports
    FROM PUBLIC;
-- Plans as data: read by the flows and the webhook, written by platform administrators.
GRANT SELECT, INSERT, UPDATE ON billing_plans TO penguinmails_billing;
-- The event log and the newest state per subscription: the webhook's own bookkeeping.
GRANT SELECT, INSERT, UPDATE ON billing_events, billing_subscriptions TO penguinmails_billing;
