-- How many times each delivery was claimed by a sender, whatever came of it (attempts counts
-- only real attempts: a throttle wait gives its attempt back), and how many of those claims
-- took it over from a sender whose lease had expired without an outcome. The first measures
-- re-claim churn; the second bounds poison rows: a row that crashes or stalls every sender
-- that claims it ends failed after PM_MAX_EXPIRED_CLAIMS such claims.
ALTER TABLE deliveries ADD COLUMN claims integer NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN expired_claims integer NOT NULL DEFAULT 0;
GRANT UPDATE (claims, expired_claims) ON deliveries TO penguinmails_app;
-- The group of the tenants' own logins (migration 0003), when there is one: senders claim as
-- their tenant's login.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'penguinmails_tenant') THEN
        GRANT UPDATE (claims, expired_claims) ON deliveries TO penguinmails_tenant;
    END IF;
END
$$;
