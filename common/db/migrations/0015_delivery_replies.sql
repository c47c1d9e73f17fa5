-- Replies (issue 10/14): when the contact first replied to a delivery's message. The intake
-- (sender/replies.py) sets it for a reply whose In-Reply-To/References names the Message-ID the
-- sender gave the delivery (`<campaign-uid.delivery-id@domain>`), found under the tenant's scope
-- only. Nothing of the reply is kept: the time alone (the reply itself stays in the customer's
-- mailbox). The dashboard's replies per day count these (common/db/delivery_stats.py).
ALTER TABLE deliveries ADD COLUMN replied_at timestamptz;
CREATE INDEX deliveries_replied ON deliveries (tenant_id, replied_at) WHERE replied_at IS NOT NULL;
-- The intake connects as a platform login (penguinmails_app); tenants' own logins (senders)
-- never record replies.
GRANT UPDATE (replied_at) ON deliveries TO penguinmails_app;
