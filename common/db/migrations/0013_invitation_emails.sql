-- Invitation e-mails (issue 12): the outbox of the invitations the API mails through the
-- platform's relay (common/db/invitation_emails.py, docs/api.md). One row per mailed
-- invitation, written in the invitation's own transaction, before any sending: it fixes the
-- Message-ID (a resent e-mail carries the same one) and holds the token sealed (AES-256-GCM
-- under a key derived from the platform's master key, the invitation's id as associated data)
-- only until the relay accepted the e-mail or refused it for good; then `token_sealed` is NULL
-- and only the invitation's SHA-256 of the token remains. At-least-once: a sending pass claims
-- a row for a while (`claimed_until`); a crash leaves the claim to expire and a later pass
-- sends again.
CREATE TABLE invitation_emails (
    invitation_id uuid        PRIMARY KEY REFERENCES invitations (id) ON DELETE CASCADE,
    message_id    text        NOT NULL UNIQUE CHECK (length(message_id) <= 300),
    key_id        smallint    NOT NULL CHECK (key_id BETWEEN 1 AND 255),
    token_sealed  bytea       CHECK (length(token_sealed) <= 200),
    created_at    timestamptz NOT NULL DEFAULT now(),
    claimed_until timestamptz,
    attempts      integer     NOT NULL DEFAULT 0,
    sent_at       timestamptz,
    error         text        CHECK (length(error) <= 500),
    -- Sent or refused: the sealed token is gone.
    CHECK ((sent_at IS NULL AND error IS NULL) OR token_sealed IS NULL)
);
CREATE INDEX invitation_emails_owed ON invitation_emails (created_at)
    WHERE sent_at IS NULL AND error IS NULL;

REVOKE ALL ON invitation_emails FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON invitation_emails TO penguinmails_api;
