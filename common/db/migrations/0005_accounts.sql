-- 0005_accounts: the customer API's accounts: users, their memberships in tenants, refresh
-- tokens and API keys.
--
-- Platform-owned, like tenants: a user spans tenants (one person, several workspaces), so these
-- rows are no tenant's and are under no tenant policy. Only the API's login reads and writes
-- them, through the group penguinmails_api: no grant to PUBLIC, to penguinmails_app or to the
-- tenants' logins (penguinmails_tenant). Secrets are never stored: passwords as argon2id hashes,
-- refresh tokens and API keys (256 random bits each) as their SHA-256.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'penguinmails_api') THEN
        CREATE ROLE penguinmails_api NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

CREATE TABLE users (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    email         text        NOT NULL CHECK (email <> '' AND length(email) <= 254),
    password_hash text        NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
    display_name  text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    disabled_at   timestamptz
);
-- One account per address, whatever its case.
CREATE UNIQUE INDEX users_email ON users (lower(email));
CREATE TRIGGER users_updated_at BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TABLE memberships (
    tenant_id  uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       text        NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX memberships_by_user ON memberships (user_id);

-- Rotating refresh tokens: each use marks the row used and issues a new one in the same family;
-- presenting a used (or revoked) token again revokes the whole family (a stolen token replayed
-- after its owner refreshed, or the other way round).
CREATE TABLE refresh_tokens (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family_id  uuid        NOT NULL,
    token_hash bytea       NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    revoked_at timestamptz
);
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expires_at);

-- A family's revocation, looked up by every access token of that family (the `fam` claim), so
-- signing out or a detected reuse stops the short-lived access tokens too.
CREATE TABLE token_families (
    id         uuid        PRIMARY KEY,
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

CREATE TABLE api_keys (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    created_by   uuid        REFERENCES users (id) ON DELETE SET NULL,
    name         text        NOT NULL CHECK (name <> '' AND length(name) <= 100),
    -- The first characters of the key (`pm_live_` and 6 more), shown in listings to tell keys apart.
    prefix       text        NOT NULL,
    key_hash     bytea       NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    scopes       text[]      NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, created_at);

REVOKE ALL ON users, memberships, refresh_tokens, token_families, api_keys FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE
    ON users, memberships, refresh_tokens, token_families, api_keys TO penguinmails_api;

-- The API maps a tenant's name to its id and namespace; it reads every tenant's row (to answer
-- 404 for one the caller is no member of), and writes none.
GRANT SELECT ON tenants TO penguinmails_api;
CREATE POLICY tenants_api_reads ON tenants FOR SELECT TO penguinmails_api USING (true);
