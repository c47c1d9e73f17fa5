-- 0010: multi-factor authentication (TOTP and recovery codes), the tenant setting that requires
-- it, invitations, platform administrators and the platform's own audit trail (docs/api.md).
-- Platform tables like those of 0005: the API's login (penguinmails_api) only.

-- A platform administrator reaches /v1/admin. The flag is set by the platform's login only
-- (`python -m penguinmails.api.http platform-admin`): the API's login may neither insert a user
-- with it nor change it, so no request, whatever its bug, can make an administrator.
ALTER TABLE users ADD COLUMN platform_admin boolean NOT NULL DEFAULT false;
REVOKE INSERT, UPDATE ON users FROM penguinmails_api;
GRANT INSERT (email, password_hash, display_name) ON users TO penguinmails_api;
GRANT UPDATE (email, password_hash, display_name, disabled_at) ON users TO penguinmails_api;

-- TOTP (RFC 6238). The secret is encrypted (AES-256-GCM) with a key derived from the platform's
-- master key `key_id` (common/keys.py, purpose mfa-secret); `last_step` is the newest time step
-- a code was accepted for, so a code is good once (a replay within its window is refused).
CREATE TABLE user_mfa (
    user_id          uuid        PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    key_id           smallint    NOT NULL CHECK (key_id BETWEEN 1 AND 255),
    secret_encrypted bytea       NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- Null until a first code proved the authenticator holds the secret; only then does
    -- sign-in ask for a code.
    confirmed_at     timestamptz,
    last_step        bigint
);

-- Ten single-use codes, as SHA-256 of 80 random bits each (shown once, at confirmation).
CREATE TABLE mfa_recovery_codes (
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  bytea       NOT NULL CHECK (length(code_hash) = 32),
    used_at    timestamptz,
    PRIMARY KEY (user_id, code_hash)
);

-- When a sign-in (token family) proved a second factor: a tenant requiring MFA opens only to
-- such sign-ins.
ALTER TABLE token_families ADD COLUMN mfa_at timestamptz;

CREATE TABLE tenant_security (
    tenant_id    uuid        PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    mfa_required boolean     NOT NULL DEFAULT false,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- An invitation to join a tenant with a role, accepted with its token (shown once to the
-- inviter, stored as its SHA-256) by a new or an existing user of that address.
CREATE TABLE invitations (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email       text        NOT NULL CHECK (email <> '' AND length(email) <= 254),
    role        text        NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    token_hash  bytea       NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    invited_by  uuid        REFERENCES users (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    accepted_at timestamptz,
    accepted_by uuid        REFERENCES users (id) ON DELETE SET NULL,
    revoked_at  timestamptz
);
CREATE INDEX invitations_by_tenant ON invitations (tenant_id, created_at);

-- What platform administrators and users did outside any tenant (MFA changes, plan edits,
-- suspensions): append-only for the API's login, like audit_log for tenants.
CREATE TABLE platform_audit_log (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor          text        NOT NULL CHECK (actor <> '' AND length(actor) <= 200),
    action         text        NOT NULL CHECK (action ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$'
                                               AND length(action) <= 100),
    target         text        CHECK (length(target) <= 500),
    source_address inet,
    request_id     text        CHECK (length(request_id) <= 200),
    details        jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(details) = 'object')
);

REVOKE ALL ON user_mfa, mfa_recovery_codes, tenant_security, invitations, platform_audit_log
    FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE
    ON user_mfa, mfa_recovery_codes, tenant_security, invitations TO penguinmails_api;
GRANT SELECT, INSERT ON platform_audit_log TO penguinmails_api;

-- Plans are edited by platform administrators through the API (issue 13).
GRANT SELECT, INSERT, UPDATE ON billing_plans TO penguinmails_api;
