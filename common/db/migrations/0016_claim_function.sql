-- Claims in one round trip (issue 10, the sender's throughput): the claim as a function that
-- opens its own tenant scope, so a sender claims a batch of due deliveries with one statement
-- outside any transaction (its own implicit one) instead of four round trips (BEGIN, the
-- scope's set_config, the claim, COMMIT) per claim: most of PostgreSQL's CPU per message was
-- these claims.
--
-- p_tenant: the scope to open, exactly as common.db.tenant_scope() opens it (a platform login
-- becomes penguinmails_app for that tenant; a tenant's own login stays itself, and is its own
-- tenant whatever p_tenant says: current_tenant_id(), migration 0003). NULL: the caller is in
-- a tenant_scope() already. The function has a SET clause, so the role and setting it makes
-- end with the call, even inside a caller's transaction.
--
-- Plpgsql plans the claim at its first execution, after the role is set, and re-plans it when
-- the role differs (row-level security depends on the role), so the policies that apply are
-- the scope's.
-- The due rows in the order they are claimed, so a claim reads the first `p_limit` of them
-- from the index instead of all due rows (sorted on every claim: the cost of a claim grew with
-- the backlog, 20 ms for 1,500 queued rows, which an enqueue gives one next_attempt_at). A row
-- in `sending` was due when it was claimed and keeps its next_attempt_at, so "due" and "its
-- lease expired" are both found under next_attempt_at <= now().
DROP INDEX deliveries_due;
CREATE INDEX deliveries_due ON deliveries (tenant_id, next_attempt_at, id)
    WHERE state IN ('queued', 'deferred', 'sending');

CREATE FUNCTION claim_deliveries(p_tenant uuid, p_owner text, p_limit integer,
                                 p_lease interval, p_campaign uuid)
    RETURNS TABLE (id bigint, campaign_uid uuid, attempts integer, claims integer,
                   expired_claims integer, email text, fields jsonb, suppressed boolean,
                   address_hash bytea, mailbox text, previous_mailbox text)
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog, public, pg_temp
    AS $$
#variable_conflict use_column
BEGIN
    IF p_tenant IS NOT NULL THEN
        PERFORM set_config('role', CASE WHEN pg_has_role(session_user, 'penguinmails_platform',
                                                         'MEMBER')
                                        THEN 'penguinmails_app' ELSE 'none' END, true),
                set_config('penguinmails.tenant_id', p_tenant::text, true);
    END IF;
    RETURN QUERY
    WITH due AS (
        SELECT d.id, d.contact_id FROM public.deliveries d
          JOIN public.campaigns c ON c.uid = d.campaign_uid
         WHERE c.sending
           AND (p_campaign IS NULL OR d.campaign_uid = p_campaign)
           AND d.state IN ('queued', 'deferred', 'sending') AND d.next_attempt_at <= now()
           AND (d.state <> 'sending' OR d.lease_until < now())
         ORDER BY d.next_attempt_at, d.id
         LIMIT p_limit
           FOR UPDATE OF d SKIP LOCKED
    )
    UPDATE public.deliveries d
       SET state = 'sending', lease_owner = p_owner, lease_until = now() + p_lease,
           attempts = d.attempts + 1, claims = d.claims + 1,
           expired_claims = d.expired_claims + (d.state = 'sending')::int, updated_at = now()
      FROM due LEFT JOIN public.contacts ct ON ct.id = due.contact_id
     WHERE d.id = due.id
    RETURNING d.id, d.campaign_uid, d.attempts, d.claims, d.expired_claims, ct.email,
        ct.fields,
        EXISTS (SELECT FROM public.suppressions s WHERE s.address_hash = d.address_hash),
        d.address_hash, d.mailbox,
        (SELECT p.mailbox FROM public.deliveries p
          WHERE p.tenant_id = d.tenant_id AND p.address_hash = d.address_hash
            AND p.mailbox IS NOT NULL AND p.sent_at IS NOT NULL
          ORDER BY p.sent_at DESC LIMIT 1);
END
$$;
REVOKE ALL ON FUNCTION claim_deliveries(uuid, text, integer, interval, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION claim_deliveries(uuid, text, integer, interval, uuid)
    TO penguinmails_app, penguinmails_platform, penguinmails_tenant;
