-- 0003_tenant_roles: row-level security keyed on the PostgreSQL login, not on a client setting.
--
-- Until now every policy compared tenant_id with penguinmails.tenant_id, a setting any client
-- can change with set_config(): whoever held a login could read any tenant's rows. From here on:
--
-- * each tenant has its own LOGIN role (created by the operator, password only in the tenant's
--   Secret), recorded in tenant_roles; for a session authenticated as such a role the tenant is
--   the one that table maps session_user to, whatever the session sets or which role it SETs.
--   session_user is the authenticated login: only a superuser can change it (SET SESSION
--   AUTHORIZATION), and SET ROLE / RESET ROLE change current_user only.
-- * the platform's logins (operator, API, bounce intake, the migration runner) are members of
--   penguinmails_platform; only for them is penguinmails.tenant_id honoured (tenant_scope()).
-- * any other login sees no tenant's rows at all.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'penguinmails_platform') THEN
        CREATE ROLE penguinmails_platform NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

-- The group of the tenants' logins: what a sender needs, and no table-level UPDATE, DELETE or
-- TRUNCATE, the privileges that would let a login LOCK a whole table (ACCESS EXCLUSIVE) and
-- stall every tenant. Column-level UPDATE grants do not allow that.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'penguinmails_tenant') THEN
        CREATE ROLE penguinmails_tenant NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

DO $$
BEGIN
    IF NOT pg_has_role(current_user, 'penguinmails_platform', 'MEMBER') THEN
        EXECUTE format('GRANT penguinmails_platform TO %I', current_user);
    END IF;
END
$$;

-- Which login is which tenant. Platform-owned: no grant to anybody else, and no policy needed
-- (a tenant reads it only through current_tenant_id(), which is SECURITY DEFINER).
CREATE TABLE tenant_roles (
    role_name  name        PRIMARY KEY,
    tenant_id  uuid        NOT NULL UNIQUE REFERENCES tenants (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON tenant_roles FROM PUBLIC;

-- SECURITY DEFINER so that tenant logins need no right on tenant_roles; the fixed search_path
-- (pg_temp last) keeps a session's temporary objects from standing in for the ones named here.
CREATE OR REPLACE FUNCTION current_tenant_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
    SET search_path = pg_catalog, public, pg_temp
    AS $$
    SELECT CASE
        WHEN EXISTS (SELECT FROM public.tenant_roles WHERE role_name = session_user)
            THEN (SELECT tenant_id FROM public.tenant_roles WHERE role_name = session_user)
        WHEN pg_has_role(session_user, 'penguinmails_platform', 'MEMBER')
            THEN NULLIF(current_setting('penguinmails.tenant_id', true), '')::uuid
    END
$$;
REVOKE ALL ON FUNCTION current_tenant_id() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION current_tenant_id()
    TO penguinmails_app, penguinmails_platform, penguinmails_tenant;

GRANT SELECT ON tenants TO penguinmails_tenant;
GRANT SELECT, INSERT ON tenant_audit_events, contact_lists, contacts, suppressions, campaigns,
    deliveries TO penguinmails_tenant;
GRANT UPDATE (name) ON contact_lists TO penguinmails_tenant;
GRANT UPDATE (list_id, email, fields, address_hash) ON contacts TO penguinmails_tenant;
GRANT UPDATE (reason, source) ON suppressions TO penguinmails_tenant;
GRANT UPDATE (spec, sending, enqueued_at, pause_reason) ON campaigns TO penguinmails_tenant;
GRANT UPDATE (contact_id, state, attempts, next_attempt_at, lease_owner, lease_until, last_code,
              last_status, reason, sent_at, unsubscribed_at, complained_at, updated_at)
    ON deliveries TO penguinmails_tenant;

-- The policies again, with the function in a sub-select: a SECURITY DEFINER function cannot be
-- inlined, and as an InitPlan it runs once per statement instead of once per row.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['tenant_audit_events', 'contact_lists', 'contacts', 'suppressions',
                             'campaigns', 'deliveries']
    LOOP
        EXECUTE format('DROP POLICY tenant_isolation ON %I', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I '
            'USING (tenant_id = (SELECT current_tenant_id())) '
            'WITH CHECK (tenant_id = (SELECT current_tenant_id()))', t);
    END LOOP;
END
$$;
DROP POLICY tenants_own_row ON tenants;
CREATE POLICY tenants_own_row ON tenants FOR SELECT TO penguinmails_app, penguinmails_tenant
    USING (id = (SELECT current_tenant_id()));

-- Nobody but the platform creates objects in the schema (the default since PostgreSQL 15; an
-- older or upgraded database may still grant it): a tenant login must not be able to plant a
-- function or table where the platform's code would find it.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
