-- A receivers' block on a shared-pool server counts for every tenant on it (issue 10).
--
-- A shared-pool SmtpServer (platform namespace, label penguinmails.io/pool=shared) carries
-- several tenants' mail from the same IP: when Gmail lists that IP for tenant A's mail, tenant
-- B's mail through it is refused too. Each tenant's strikes are its own rows (sending_blocks,
-- 0012, under row-level security), so B used to keep sending through the listed server and
-- collect its own strikes. Here the strikes against pool servers are also written to a
-- platform-owned table that no tenant login can read; senders learn only which pool servers
-- are blocked and until when, through a narrow function.
--
-- What a tenant can and cannot do (it holds only its own login, and its customers only the
-- bounce tokens in the mail they received):
-- * record a strike only against a registered pool server, only for one of its own
--   deliveries that its ledger says that server carried and that ended failed or bounced, once
--   per delivery (record_pool_strikes);
-- * read nothing of other tenants: not the strikes, not which tenant struck, not the servers
--   list; only (server, until) of pool servers blocked now (pool_server_blocks);
-- * block the pool with DSNs: not alone. A DSN is mail from the Internet, and a customer can
--   bounce its own campaign's messages to its own addresses with forged 5.7.1 DSNs; so all
--   the DSN strikes of one tenant within the window count as one strike against a pool
--   server: DSNs block it for everyone only when BLOCK_STRIKES (3) tenants report it, however
--   many one of them sends (its own mail still skips the server after its own 3, in
--   sending_blocks). The relay's own 5.7.x replies (seen by the sender on its connection to
--   the pool relay, nothing a customer can write) count one each, from any tenant.
-- * with its database login stolen (it is in the tenant's namespace, never given to the
--   customer), forge relay strikes: that can block a pool server for BLOCK_PAUSE_SECONDS after
--   each three forged failed deliveries of its own; every strike row names its tenant, for
--   the platform to see who did it.

-- The shared-pool servers, by SmtpServer name in the platform namespace: written by the
-- platform (the operator registers a labelled server, forgets it when unlabelled or deleted).
CREATE TABLE pool_servers (
    name     text        PRIMARY KEY CHECK (length(name) <= 253),
    added_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON pool_servers FROM PUBLIC;
GRANT SELECT, INSERT, DELETE ON pool_servers TO penguinmails_platform;

-- One row per strike against a pool server, whichever tenant's delivery it was. No RLS and no
-- grant to tenants or to penguinmails_app: only the platform's logins read it (the operator
-- shows a pool server's block in its status), tenants write it only through
-- record_pool_strikes(). Kept a day, like sending_blocks.
CREATE TABLE pool_server_strikes (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    server      text        NOT NULL REFERENCES pool_servers (name) ON DELETE CASCADE,
    tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    delivery_id bigint      NOT NULL UNIQUE,
    source      text        NOT NULL CHECK (source IN ('relay', 'dsn')),
    status      text        CHECK (length(status) <= 16),
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pool_server_strikes_recent ON pool_server_strikes (server, at);
REVOKE ALL ON pool_server_strikes FROM PUBLIC;
GRANT SELECT ON pool_server_strikes TO penguinmails_platform;

-- Where tenants' strikes are recorded (common.db.blocks.add_blocks, the sender's relay
-- replies and the intake's DSNs): also count the server-scope ones that are about a pool
-- server. The caller's tenant is current_tenant_id() (its login, or the intake's scope), never
-- an argument; rows that do not hold are dropped silently (the tenant's own strike is still
-- recorded in sending_blocks). Returns how many were recorded.
CREATE FUNCTION record_pool_strikes(p_servers text[], p_deliveries bigint[],
                                    p_statuses text[], p_source text)
    RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
    AS $$
DECLARE
    tenant uuid := current_tenant_id();
    added integer;
BEGIN
    IF tenant IS NULL OR p_source IS NULL OR p_source NOT IN ('relay', 'dsn') THEN
        RETURN 0;
    END IF;
    INSERT INTO public.pool_server_strikes (server, tenant_id, delivery_id, source, status)
    SELECT s.server, tenant, s.delivery_id, p_source, left(s.status, 16)
      FROM unnest(p_servers, p_deliveries, p_statuses) AS s (server, delivery_id, status)
      JOIN public.pool_servers ps ON ps.name = s.server
      JOIN public.deliveries d
        ON d.id = s.delivery_id AND d.tenant_id = tenant AND d.relay = s.server
       AND d.state IN ('failed', 'bounced')
    ON CONFLICT (delivery_id) DO NOTHING;
    GET DIAGNOSTICS added = ROW_COUNT;
    DELETE FROM public.pool_server_strikes WHERE at < now() - interval '1 day';
    RETURN added;
END
$$;
REVOKE ALL ON FUNCTION record_pool_strikes(text[], bigint[], text[], text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION record_pool_strikes(text[], bigint[], text[], text)
    TO penguinmails_app, penguinmails_tenant;

-- The pool servers blocked now, with what the platform may show: at least `strikes` counted
-- strikes within `p_window` seconds ending at one of them, the latest such strike less than
-- `p_pause` seconds ago. Counted: each relay strike, and one per tenant with DSN strikes in
-- that window (one tenant's DSNs, forged or not, are one strike). For the platform only;
-- senders use pool_server_blocks().
CREATE FUNCTION pool_server_block_details(p_window float8, p_strikes integer, p_pause float8)
    RETURNS TABLE (server text, counted integer, tenants integer, last_status text,
                   last_at timestamptz)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, public, pg_temp
    AS $$
    SELECT DISTINCT ON (r.server) r.server, n.counted, n.tenants, r.status, r.at
      FROM public.pool_server_strikes r
     CROSS JOIN LATERAL (
        SELECT (count(*) FILTER (WHERE w.source = 'relay')
                + count(DISTINCT w.tenant_id) FILTER (WHERE w.source = 'dsn'))::integer
                   AS counted,
               count(DISTINCT w.tenant_id)::integer AS tenants
          FROM public.pool_server_strikes w
         WHERE w.server = r.server AND w.at <= r.at
           AND w.at >= r.at - make_interval(secs => p_window)
     ) n
     WHERE r.at > now() - make_interval(secs => p_pause)
       AND n.counted >= greatest(p_strikes, 1)
     ORDER BY r.server, r.at DESC
$$;
REVOKE ALL ON FUNCTION pool_server_block_details(float8, integer, float8) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pool_server_block_details(float8, integer, float8)
    TO penguinmails_platform;

-- What a sender may know: which pool servers are blocked, until when. Nothing about who.
CREATE FUNCTION pool_server_blocks(p_window float8, p_strikes integer, p_pause float8)
    RETURNS TABLE (server text, until timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
    AS $$
    SELECT b.server, b.last_at + make_interval(secs => p_pause)
      FROM public.pool_server_block_details(p_window, p_strikes, p_pause) b
$$;
REVOKE ALL ON FUNCTION pool_server_blocks(float8, integer, float8) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pool_server_blocks(float8, integer, float8)
    TO penguinmails_app, penguinmails_tenant;
