-- Mailbox rotation (Campaign.spec.rotation): the mailbox (From address) a delivery is sent
-- from, recorded with its first outcome, so its retries and throttle waits keep it, and so
-- a contact's later campaigns find the mailbox of its conversation (sticky rotation).
ALTER TABLE deliveries ADD COLUMN mailbox text CHECK (length(mailbox) <= 320);
-- Sticky lookup: the mailbox an address was last sent from, in any campaign of the tenant.
CREATE INDEX deliveries_mailbox_by_address ON deliveries (tenant_id, address_hash, sent_at)
    WHERE mailbox IS NOT NULL;
-- Warm-up: when each mailbox first sent (the Campaign controller, per reconcile).
CREATE INDEX deliveries_by_mailbox ON deliveries (tenant_id, mailbox, sent_at)
    WHERE mailbox IS NOT NULL;
GRANT UPDATE (mailbox) ON deliveries TO penguinmails_app;
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'penguinmails_tenant') THEN
        GRANT UPDATE (mailbox) ON deliveries TO penguinmails_tenant;
    END IF;
END
$$;
