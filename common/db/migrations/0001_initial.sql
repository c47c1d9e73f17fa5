-- 0001_initial: the tenants table (platform-owned) and the first tenant-owned tables.
--
-- Every tenant-owned table carries tenant_id and is under row-level security from the start:
-- ENABLE + FORCE ROW LEVEL SECURITY and one policy comparing tenant_id with the transaction-local
-- setting penguinmails.tenant_id (see penguinmails.common.db.tenant_scope). Superusers and roles
-- with BYPASSRLS ignore every policy, so application code does tenant work as penguinmails_app.

-- The role application code switches to (SET LOCAL ROLE) for tenant-scoped work. NOLOGIN: nobody
-- connects as it; the login roles of the operator, API and sender are members of it. Roles are
-- per cluster, not per database, and the migration lock is per database: another database of the
-- same cluster may create it at the same moment, hence the exception handler.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'penguinmails_app') THEN
        CREATE ROLE penguinmails_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

DO $$
BEGIN
    IF EXISTS (
        SELECT FROM pg_roles
        WHERE rolname = 'penguinmails_app' AND (rolsuper OR rolbypassrls)
    ) THEN
        RAISE EXCEPTION 'role penguinmails_app must not be SUPERUSER or BYPASSRLS: row-level '
            'security would not apply to it';
    END IF;
    -- The role running the migrations (the platform's login) must be able to SET ROLE to it.
    -- Superusers always can; pg_has_role() is true for them.
    IF NOT pg_has_role(current_user, 'penguinmails_app', 'MEMBER') THEN
        EXECUTE format('GRANT penguinmails_app TO %I', current_user);
    END IF;
END
$$;

-- The tenant of the current transaction, NULL when none is set. NULLIF matters: once a
-- transaction-local setting has been used on a connection it reads '' (not NULL) afterwards,
-- and ''::uuid would raise instead of matching nothing.
CREATE FUNCTION current_tenant_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('penguinmails.tenant_id', true), '')::uuid $$;

CREATE FUNCTION touch_updated_at() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

-- Platform-owned: one row per Tenant resource. Deleting the resource only marks the row
-- (deleted_at, purge_after); the row and everything that references it stay until purge_after,
-- so a tenant re-created within the retention period gets its data back.
CREATE TABLE tenants (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    name          text        NOT NULL UNIQUE CHECK (name <> '' AND length(name) <= 253),
    tier          text        NOT NULL CHECK (tier <> ''),
    namespace     text        NOT NULL CHECK (namespace <> '' AND length(namespace) <= 63),
    display_name  text,
    contact_email text        NOT NULL,
    suspended     boolean     NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz,
    purge_after   timestamptz,
    CONSTRAINT tenants_deletion_consistent CHECK (
        (deleted_at IS NULL AND purge_after IS NULL)
        OR (deleted_at IS NOT NULL AND purge_after >= deleted_at)
    )
);
-- Two live tenants never share a namespace (that would share their Kubernetes objects).
CREATE UNIQUE INDEX tenants_namespace_live ON tenants (namespace) WHERE deleted_at IS NULL;
CREATE INDEX tenants_purge_due ON tenants (purge_after) WHERE purge_after IS NOT NULL;
CREATE TRIGGER tenants_updated_at BEFORE UPDATE ON tenants
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- The app role may read its own tenant's row and nothing else. Not FORCEd: the table owner
-- (the platform) manages all tenants.
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenants_own_row ON tenants FOR SELECT TO penguinmails_app
    USING (id = current_tenant_id());
GRANT SELECT ON tenants TO penguinmails_app;

-- Tenant-owned: what happened to a tenant, for its own eyes. Append-only for the app role.
CREATE TABLE tenant_audit_events (
    id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id uuid        NOT NULL DEFAULT current_tenant_id()
                          REFERENCES tenants (id) ON DELETE CASCADE,
    at        timestamptz NOT NULL DEFAULT now(),
    kind      text        NOT NULL CHECK (kind <> ''),
    message   text        NOT NULL
);
CREATE INDEX tenant_audit_events_by_tenant ON tenant_audit_events (tenant_id, at);

-- Tenant-owned: contact lists and their contacts.
CREATE TABLE contact_lists (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id  uuid        NOT NULL DEFAULT current_tenant_id()
                           REFERENCES tenants (id) ON DELETE CASCADE,
    name       text        NOT NULL CHECK (name <> ''),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT contact_lists_name_per_tenant UNIQUE (tenant_id, name),
    -- Target of the composite foreign key below.
    CONSTRAINT contact_lists_tenant_id_id UNIQUE (tenant_id, id)
);
CREATE TRIGGER contact_lists_updated_at BEFORE UPDATE ON contact_lists
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TABLE contacts (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id  uuid        NOT NULL DEFAULT current_tenant_id()
                           REFERENCES tenants (id) ON DELETE CASCADE,
    list_id    uuid        NOT NULL,
    email      text        NOT NULL CHECK (email LIKE '%_@_%'),
    fields     jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(fields) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- Foreign-key checks do not see row-level security: with (tenant_id, list_id) a contact can
    -- only point at a list of its own tenant, never at (or probe for) another tenant's list.
    CONSTRAINT contacts_list_same_tenant FOREIGN KEY (tenant_id, list_id)
        REFERENCES contact_lists (tenant_id, id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX contacts_email_per_list ON contacts (list_id, lower(email));
CREATE INDEX contacts_by_tenant ON contacts (tenant_id);
CREATE TRIGGER contacts_updated_at BEFORE UPDATE ON contacts
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- Row-level security on every tenant-owned table: ENABLE applies it to ordinary roles, FORCE to
-- the table owner too. The policy (for all roles, all commands) filters what is read and
-- checks what is written.
ALTER TABLE tenant_audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_audit_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_audit_events
    USING (tenant_id = current_tenant_id()) WITH CHECK (tenant_id = current_tenant_id());

ALTER TABLE contact_lists ENABLE ROW LEVEL SECURITY;
ALTER TABLE contact_lists FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON contact_lists
    USING (tenant_id = current_tenant_id()) WITH CHECK (tenant_id = current_tenant_id());

ALTER TABLE contacts ENABLE ROW LEVEL SECURITY;
ALTER TABLE contacts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON contacts
    USING (tenant_id = current_tenant_id()) WITH CHECK (tenant_id = current_tenant_id());

-- What the app role may do. tenant_id and id are never updatable: a row cannot change owner.
GRANT SELECT, INSERT ON tenant_audit_events TO penguinmails_app;
GRANT SELECT, INSERT, DELETE ON contact_lists, contacts TO penguinmails_app;
GRANT UPDATE (name) ON contact_lists TO penguinmails_app;
GRANT UPDATE (list_id, email, fields) ON contacts TO penguinmails_app;
