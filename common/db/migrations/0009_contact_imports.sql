-- 0009_contact_imports: contact imports through the customer API (api/http/routes/
-- contact_imports.py, penguinmails.common.db.contact_imports): one row per uploaded CSV with its
-- progress and outcome, and one row per line the import skipped.
--
-- Tenant-owned, under the same row-level security as the others (ENABLE + FORCE, one
-- tenant_isolation policy on tenant_id = (SELECT current_tenant_id())). Only the platform
-- (penguinmails_app) touches them: no grant to the tenants' logins.

CREATE TABLE contact_imports (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid        NOT NULL DEFAULT current_tenant_id()
                            REFERENCES tenants (id) ON DELETE CASCADE,
    list_id     uuid        NOT NULL,
    -- running: an API process is importing it and holds the job's advisory lock (its session
    -- lock, released by PostgreSQL when that process's connection ends, crash included): a
    -- running job whose lock is free was abandoned, and is marked failed when next read.
    state       text        NOT NULL DEFAULT 'running'
                            CHECK (state IN ('running', 'succeeded', 'failed')),
    bytes_total bigint      NOT NULL CHECK (bytes_total >= 0),
    bytes_done  bigint      NOT NULL DEFAULT 0 CHECK (bytes_done >= 0),
    -- Data rows read so far (imported or skipped); rows_total once the whole file was read.
    rows_done   integer     NOT NULL DEFAULT 0 CHECK (rows_done >= 0),
    rows_total  integer     CHECK (rows_total >= 0),
    imported    integer     NOT NULL DEFAULT 0 CHECK (imported >= 0),
    skipped     integer     NOT NULL DEFAULT 0 CHECK (skipped >= 0),
    failure     text        CHECK (length(failure) <= 1000),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    CONSTRAINT contact_imports_list_same_tenant FOREIGN KEY (tenant_id, list_id)
        REFERENCES contact_lists (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT contact_imports_tenant_id_id UNIQUE (tenant_id, id)
);
CREATE INDEX contact_imports_by_tenant ON contact_imports (tenant_id, created_at);
CREATE TRIGGER contact_imports_updated_at BEFORE UPDATE ON contact_imports
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

-- The lines an import skipped: line number in the file, the field at fault (the CSV column,
-- e.g. `email`, or null for the whole row) and why.
CREATE TABLE contact_import_errors (
    tenant_id uuid    NOT NULL DEFAULT current_tenant_id()
                      REFERENCES tenants (id) ON DELETE CASCADE,
    import_id uuid    NOT NULL,
    line      integer NOT NULL CHECK (line >= 1),
    field     text    CHECK (length(field) <= 200),
    message   text    NOT NULL CHECK (length(message) <= 1000),
    PRIMARY KEY (import_id, line),
    CONSTRAINT contact_import_errors_same_tenant FOREIGN KEY (tenant_id, import_id)
        REFERENCES contact_imports (tenant_id, id) ON DELETE CASCADE
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['contact_imports', 'contact_import_errors']
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

GRANT SELECT, INSERT, DELETE ON contact_imports, contact_import_errors TO penguinmails_app;
GRANT UPDATE (state, bytes_done, rows_done, rows_total, imported, skipped, failure, finished_at)
    ON contact_imports TO penguinmails_app;
