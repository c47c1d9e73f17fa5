-- Receivers' policy/reputation blocks (5.7.x) reach the server or domain they are about, in
-- every sender pod (issue 10). `deliveries.relay` is the SmtpServer that carried a delivery
-- (its last attempt), recorded with the outcome: a DSN that arrives later at the intake names
-- only the delivery, and this says which server the receiver blocked.
ALTER TABLE deliveries ADD COLUMN relay text CHECK (length(relay) <= 253);
GRANT UPDATE (relay) ON deliveries TO penguinmails_app, penguinmails_tenant;

-- One row per block, from the relay's reply (a sender) or from a DSN (the intake), against a
-- server (`target` = SmtpServer name) or a sending domain (`target` = the From domain).
-- Senders read the recent ones: BLOCK_STRIKES within BLOCK_WINDOW_SECONDS and that server or
-- domain is skipped for BLOCK_PAUSE_SECONDS (sender/engine.py). Rows older than a day are
-- deleted as new ones come (prune_sending_blocks): nothing reads them. No address: the
-- delivery's id only.
CREATE TABLE sending_blocks (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   uuid        NOT NULL DEFAULT current_tenant_id()
                            REFERENCES tenants (id) ON DELETE CASCADE,
    scope       text        NOT NULL CHECK (scope IN ('server', 'domain')),
    target      text        NOT NULL CHECK (length(target) <= 253),
    source      text        NOT NULL CHECK (source IN ('relay', 'dsn')),
    delivery_id bigint,
    status      text        CHECK (length(status) <= 16),
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sending_blocks_recent ON sending_blocks (tenant_id, at);
ALTER TABLE sending_blocks ENABLE ROW LEVEL SECURITY;
ALTER TABLE sending_blocks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON sending_blocks
    USING (tenant_id = (SELECT current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT current_tenant_id()));
-- Tenants' logins (senders) get no table-level DELETE (0003: it would let a login LOCK the
-- table and stall every tenant's senders); they prune through this owner's function, which
-- deletes only the current tenant's rows older than a day.
GRANT SELECT, INSERT ON sending_blocks TO penguinmails_app, penguinmails_tenant;
CREATE FUNCTION prune_sending_blocks() RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
    AS $$
    DELETE FROM public.sending_blocks
     WHERE tenant_id = (SELECT current_tenant_id()) AND at < now() - interval '1 day'
$$;
REVOKE ALL ON FUNCTION prune_sending_blocks() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION prune_sending_blocks() TO penguinmails_app, penguinmails_tenant;
