-- 0006_audit_gdpr_webhooks: the audit log, the GDPR erasure's scrub of it, outbound webhooks.
--
-- All tables are tenant-owned, under the same row-level security as the others (ENABLE + FORCE,
-- one tenant_isolation policy on tenant_id = (SELECT current_tenant_id())).

-- The audit log: who did what to which object of a tenant, from where, in which request.
-- Append-only for everybody but the table owner: penguinmails_app and the tenants' logins may
-- INSERT and SELECT their own tenant's rows and nothing else (no UPDATE, DELETE or TRUNCATE
-- grant), and INSERT only the descriptive columns: id, tenant_id and `at` always come from the
-- database (identity, current tenant, the server's clock), so an entry cannot be back-dated or
-- written for another tenant.
CREATE TABLE audit_log (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id      uuid        NOT NULL DEFAULT current_tenant_id()
                               REFERENCES tenants (id) ON DELETE CASCADE,
    at             timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Who: "user:<id>", "api_key:<id>", "operator", "system:<component>".
    actor          text        NOT NULL CHECK (actor <> '' AND length(actor) <= 200),
    -- What: dotted lower-case verb, e.g. "contact.erase", "webhook_endpoint.create".
    action         text        NOT NULL CHECK (action ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$'
                                               AND length(action) <= 100),
    -- Which object: "<kind>:<id>"; never an e-mail address (penguinmails.common.db.gdpr).
    target         text        CHECK (length(target) <= 500),
    source_address inet,
    request_id     text        CHECK (length(request_id) <= 200),
    details        jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(details) = 'object')
);
CREATE INDEX audit_log_by_tenant ON audit_log (tenant_id, id DESC);
CREATE INDEX audit_log_by_tenant_action ON audit_log (tenant_id, action, id DESC);
CREATE INDEX audit_log_by_tenant_target ON audit_log (tenant_id, target, id DESC);

ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_log
    USING (tenant_id = (SELECT current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT current_tenant_id()));

GRANT SELECT ON audit_log TO penguinmails_app, penguinmails_tenant;
GRANT INSERT (actor, action, target, source_address, request_id, details)
    ON audit_log TO penguinmails_app, penguinmails_tenant;

-- GDPR erasure removes an address from the audit trail too (tenant_audit_events and audit_log
-- may quote it). The app role cannot UPDATE either table; this owner's function can, and does
-- only that: within the current tenant, it replaces the one address it is given (it must look
-- like an address, so it cannot be used to rewrite arbitrary words) by '[erased]'. Only
-- penguinmails_app may call it, never a tenant's login. Returns the rows changed.
CREATE FUNCTION scrub_audit_address(address text) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
    AS $$
DECLARE
    tenant  uuid := current_tenant_id();
    pattern text;
    changed bigint := 0;
    n       bigint;
BEGIN
    IF tenant IS NULL THEN
        RAISE EXCEPTION 'scrub_audit_address: no current tenant';
    END IF;
    IF address IS NULL OR address !~ '^[^@\s]+@[^@\s]+\.[^@\s]+$' OR length(address) > 320 THEN
        RAISE EXCEPTION 'scrub_audit_address: % is not an e-mail address', quote_literal(address);
    END IF;
    -- Every character that is not a letter or digit, escaped: the address matched literally.
    pattern := regexp_replace(address, '([^[:alnum:]])', '\\\1', 'g');
    UPDATE public.audit_log
       SET target = regexp_replace(target, pattern, '[erased]', 'gi'),
           actor = regexp_replace(actor, pattern, '[erased]', 'gi'),
           request_id = regexp_replace(request_id, pattern, '[erased]', 'gi'),
           details = regexp_replace(details::text, pattern, '[erased]', 'gi')::jsonb
     WHERE tenant_id = tenant
       AND strpos(lower(concat_ws(' ', target, actor, request_id, details::text)),
                  lower(address)) > 0;
    GET DIAGNOSTICS n = ROW_COUNT;
    changed := changed + n;
    UPDATE public.tenant_audit_events
       SET message = regexp_replace(message, pattern, '[erased]', 'gi'),
           kind = regexp_replace(kind, pattern, '[erased]', 'gi')
     WHERE tenant_id = tenant
       AND strpos(lower(concat_ws(' ', kind, message)), lower(address)) > 0;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN changed + n;
END
$$;
REVOKE ALL ON FUNCTION scrub_audit_address(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION scrub_audit_address(text) TO penguinmails_app;

-- Outbound webhooks (penguinmails.common.webhooks). Endpoints: where a tenant wants events, the
-- signing secret (`whsec_...`, shown to the tenant, needed in clear to sign) and which event
-- types. Only the platform (penguinmails_app) touches these tables: no tenant login grant, so a
-- sender pod can neither read secrets nor point deliveries elsewhere.
CREATE TABLE webhook_endpoints (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid        NOT NULL DEFAULT current_tenant_id()
                            REFERENCES tenants (id) ON DELETE CASCADE,
    url         text        NOT NULL CHECK (url ~ '^https?://' AND length(url) <= 2048),
    secret      text        NOT NULL CHECK (secret LIKE 'whsec\_%'),
    -- After a rotation the old secret signs too (a second signature) until previous_until, so
    -- receivers can switch without losing events.
    previous_secret text    CHECK (previous_secret LIKE 'whsec\_%'),
    previous_until  timestamptz,
    event_types text[]      NOT NULL CHECK (cardinality(event_types) > 0),
    description text        CHECK (length(description) <= 500),
    enabled     boolean     NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_endpoints_tenant_id_id UNIQUE (tenant_id, id)
);
CREATE TRIGGER webhook_endpoints_updated_at BEFORE UPDATE ON webhook_endpoints
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- One row per event (the Standard Webhooks message): `id` is the webhook-id header, the same
-- for every endpoint and every attempt, so receivers can de-duplicate.
CREATE TABLE webhook_events (
    id         text        PRIMARY KEY CHECK (id ~ '^msg_[0-9a-f]{32}$'),
    tenant_id  uuid        NOT NULL DEFAULT current_tenant_id()
                           REFERENCES tenants (id) ON DELETE CASCADE,
    event_type text        NOT NULL,
    payload    jsonb       NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_events_tenant_id_id UNIQUE (tenant_id, id)
);
CREATE INDEX webhook_events_by_tenant ON webhook_events (tenant_id, created_at);

-- One row per event x endpoint: its state and retry schedule.
CREATE TABLE webhook_deliveries (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id       uuid        NOT NULL DEFAULT current_tenant_id()
                                REFERENCES tenants (id) ON DELETE CASCADE,
    event_id        text        NOT NULL,
    endpoint_id     uuid        NOT NULL,
    state           text        NOT NULL DEFAULT 'pending'
                                CHECK (state IN ('pending', 'succeeded', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,
    -- A manual redelivery is one more attempt, outside the retry schedule.
    manual          boolean     NOT NULL DEFAULT false,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- Same-tenant references (foreign-key checks do not see row-level security).
    CONSTRAINT webhook_deliveries_event_same_tenant FOREIGN KEY (tenant_id, event_id)
        REFERENCES webhook_events (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT webhook_deliveries_endpoint_same_tenant FOREIGN KEY (tenant_id, endpoint_id)
        REFERENCES webhook_endpoints (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT webhook_deliveries_once UNIQUE (event_id, endpoint_id),
    CONSTRAINT webhook_deliveries_tenant_id_id UNIQUE (tenant_id, id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (tenant_id, next_attempt_at)
    WHERE state = 'pending';

-- The delivery log: every attempt with what came back.
CREATE TABLE webhook_attempts (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    uuid        NOT NULL DEFAULT current_tenant_id()
                             REFERENCES tenants (id) ON DELETE CASCADE,
    delivery_id  bigint      NOT NULL,
    attempt      integer     NOT NULL CHECK (attempt >= 1),
    at           timestamptz NOT NULL DEFAULT now(),
    status_code  integer,
    latency_ms   integer     NOT NULL CHECK (latency_ms >= 0),
    -- The first bytes of the response body, or why there was no response.
    response     text        CHECK (length(response) <= 2048),
    error        text        CHECK (length(error) <= 500),
    CONSTRAINT webhook_attempts_delivery_same_tenant FOREIGN KEY (tenant_id, delivery_id)
        REFERENCES webhook_deliveries (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_id, attempt);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['webhook_endpoints', 'webhook_events', 'webhook_deliveries',
                             'webhook_attempts']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I '
            'USING (tenant_id = (SELECT current_tenant_id())) '
            'WITH CHECK (tenant_id = (SELECT current_tenant_id()))', t);
    END LOOP;
END
$$;

GRANT SELECT, INSERT, DELETE ON webhook_endpoints TO penguinmails_app;
GRANT UPDATE (url, secret, previous_secret, previous_until, event_types, description, enabled)
    ON webhook_endpoints TO penguinmails_app;
GRANT SELECT, INSERT, DELETE ON webhook_events, webhook_deliveries, webhook_attempts
    TO penguinmails_app;
GRANT UPDATE (state, attempts, next_attempt_at, lease_until, manual, updated_at)
    ON webhook_deliveries TO penguinmails_app;
