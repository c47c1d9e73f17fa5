-- 0002_sending: suppression list, campaigns as the sender sees them, and the delivery ledger.
--
-- All tenant-owned, under the same row-level security as 0001 (ENABLE + FORCE, one policy on
-- tenant_id = current_tenant_id()). Addresses on the suppression list are stored only as an
-- HMAC-SHA256 of the normalized address (penguinmails.common.suppression), so the list keeps
-- working after a contact is erased (GDPR) without keeping the address itself.

-- The same keyed hash on each contact, computed at import: the enqueue query compares it with
-- the suppression list without the database ever needing the key. Nullable because rows written
-- before this migration have none; such contacts are not enqueued until re-imported.
ALTER TABLE contacts ADD COLUMN address_hash bytea CHECK (length(address_hash) = 32);
CREATE INDEX contacts_by_address_hash ON contacts (tenant_id, address_hash);
GRANT UPDATE (address_hash) ON contacts TO penguinmails_app;

CREATE TABLE suppressions (
    tenant_id    uuid        NOT NULL DEFAULT current_tenant_id()
                             REFERENCES tenants (id) ON DELETE CASCADE,
    address_hash bytea       NOT NULL CHECK (length(address_hash) = 32),
    reason       text        NOT NULL
                             CHECK (reason IN ('unsubscribed', 'hard_bounce', 'complaint', 'manual')),
    -- Where it came from (campaign uid, delivery id, "import"...): never the address.
    source       text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, address_hash)
);

-- One row per Campaign resource (keyed by its Kubernetes uid), written by the operator: what
-- the sender needs to render, sign and relay, and whether it may send now (`sending`, the gate
-- the preflight opens). The sender never reads Kubernetes for content.
CREATE TABLE campaigns (
    uid         uuid        PRIMARY KEY,
    tenant_id   uuid        NOT NULL DEFAULT current_tenant_id()
                            REFERENCES tenants (id) ON DELETE CASCADE,
    namespace   text        NOT NULL,
    name        text        NOT NULL,
    spec        jsonb       NOT NULL CHECK (jsonb_typeof(spec) = 'object'),
    sending     boolean     NOT NULL DEFAULT false,
    -- Set by a sender that stopped the campaign for a problem on our side (e.g. 5.7.x DKIM
    -- failures); the operator turns it into a condition and a Warning event.
    pause_reason text,
    enqueued_at timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT campaigns_tenant_uid UNIQUE (tenant_id, uid),
    CONSTRAINT campaigns_name_per_tenant UNIQUE (tenant_id, namespace, name)
);
CREATE TRIGGER campaigns_updated_at BEFORE UPDATE ON campaigns
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- The delivery ledger: one row per campaign x recipient address. States:
--   queued -> sending (claimed, lease_until set) -> sent | deferred | bounced | failed | skipped
--   deferred -> sending again once next_attempt_at has passed; sent -> bounced on a late DSN.
-- A row left in `sending` past lease_until belonged to a sender that died: it is claimed again,
-- so a crash re-sends at most what was in flight (the Message-ID stays the same).
CREATE TABLE deliveries (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id       uuid        NOT NULL DEFAULT current_tenant_id()
                                REFERENCES tenants (id) ON DELETE CASCADE,
    campaign_uid    uuid        NOT NULL,
    contact_id      uuid        REFERENCES contacts (id) ON DELETE SET NULL,
    address_hash    bytea       NOT NULL CHECK (length(address_hash) = 32),
    state           text        NOT NULL DEFAULT 'queued' CHECK (state IN (
                                    'queued', 'sending', 'sent', 'deferred', 'bounced',
                                    'failed', 'skipped')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_owner     text,
    lease_until     timestamptz,
    last_code       integer,
    last_status     text,
    reason          text,
    sent_at         timestamptz,
    unsubscribed_at timestamptz,
    complained_at   timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT deliveries_campaign_same_tenant FOREIGN KEY (tenant_id, campaign_uid)
        REFERENCES campaigns (tenant_id, uid) ON DELETE CASCADE,
    -- Enqueueing twice adds nothing: one delivery per address per campaign.
    CONSTRAINT deliveries_once_per_address UNIQUE (campaign_uid, address_hash)
);
CREATE INDEX deliveries_due ON deliveries (tenant_id, next_attempt_at)
    WHERE state IN ('queued', 'deferred', 'sending');
CREATE INDEX deliveries_by_campaign_state ON deliveries (campaign_uid, state);

ALTER TABLE suppressions ENABLE ROW LEVEL SECURITY;
ALTER TABLE suppressions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON suppressions
    USING (tenant_id = current_tenant_id()) WITH CHECK (tenant_id = current_tenant_id());

ALTER TABLE campaigns ENABLE ROW LEVEL SECURITY;
ALTER TABLE campaigns FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON campaigns
    USING (tenant_id = current_tenant_id()) WITH CHECK (tenant_id = current_tenant_id());

ALTER TABLE deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE deliveries FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON deliveries
    USING (tenant_id = current_tenant_id()) WITH CHECK (tenant_id = current_tenant_id());

GRANT SELECT, INSERT, DELETE ON suppressions TO penguinmails_app;
GRANT UPDATE (reason, source) ON suppressions TO penguinmails_app;
GRANT SELECT, INSERT, DELETE ON campaigns TO penguinmails_app;
GRANT UPDATE (spec, sending, enqueued_at, pause_reason) ON campaigns TO penguinmails_app;
GRANT SELECT, INSERT, DELETE ON deliveries TO penguinmails_app;
GRANT UPDATE (contact_id, state, attempts, next_attempt_at, lease_owner, lease_until, last_code,
              last_status, reason, sent_at, unsubscribed_at, complained_at, updated_at)
    ON deliveries TO penguinmails_app;
