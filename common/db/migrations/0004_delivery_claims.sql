-- How many times each delivery was claimed by a sender, whatever came of it (attempts counts
-- only real attempts: a throttle wait gives its attempt back). Bounds poison rows (a row that
-- crashes or stalls every sender that claims it ends failed after PM_MAX_CLAIMS claims) and
-- measures re-claim churn.
ALTER TABLE deliveries ADD COLUMN claims integer NOT NULL DEFAULT 0;
GRANT UPDATE (claims) ON deliveries TO penguinmails_app;
