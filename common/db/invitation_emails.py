"""Invitation e-mails (migration 0013): the invitee gets a link to accept, through the
platform's relay (common/relay.py), at least once.

The invitation's token is stored only as its SHA-256 (common/db/members.py), so the e-mail
cannot be rebuilt from it. The outbox row, written in the invitation's own transaction before
anything is sent, holds the token sealed (AES-256-GCM under a key derived from the platform's
master key, the invitation id as associated data) and the e-mail's fixed Message-ID. A pass
claims the row for `CLAIM`, sends, and then forgets the token (sent, or refused for good with
5xx); a relay that is down leaves it owed. A crash between the relay's acceptance and the
bookkeeping leaves the claim to expire and a later pass sends it again with the same
Message-ID: at-least-once, like the usage notices, because a lost invitation leaves the invitee
with nothing while a repeated one is recognisably the same.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from urllib.parse import quote

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from penguinmails.common.db import AnyConnection
from penguinmails.common.keys import MasterKeys, derive
from penguinmails.common.relay import Delivery, deliver, message_domain
from penguinmails.common.settings import NoticeSettings

__all__ = ["CLAIM", "InvitationMail", "record", "send_owed"]

log = logging.getLogger(__name__)

CLAIM = timedelta(minutes=5)
"""How long a pass holds an e-mail it is sending (as the usage notices)."""
_PURPOSE = "invitation-token"
_NONCE = 12


@dataclass(frozen=True)
class InvitationMail:
    """What the invitation e-mails need besides the relay."""

    relay: NoticeSettings
    """The platform's relay (PM_NOTICE_SMTP_*), with the invitations' From."""
    keys: MasterKeys
    """Seal the token while the e-mail is owed."""
    accept_url: str
    """The page that accepts an invitation; the token follows as `#token=...` (a fragment:
    never sent to a server, so no access log holds it)."""


def _aead(keys: MasterKeys, kid: int) -> AESGCM:
    secret = keys.secrets.get(kid)
    if secret is None:
        raise LookupError(f"master key {kid} is no longer in the ring")
    return AESGCM(derive(secret, _PURPOSE))


def _seal(keys: MasterKeys, invitation_id: uuid.UUID, token: str) -> bytes:
    nonce = secrets.token_bytes(_NONCE)
    aead = _aead(keys, keys.current)
    return nonce + aead.encrypt(nonce, token.encode("ascii"), invitation_id.bytes)


def _unseal(keys: MasterKeys, invitation_id: uuid.UUID, kid: int, blob: bytes) -> str:
    try:
        plain = _aead(keys, kid).decrypt(blob[:_NONCE], blob[_NONCE:], invitation_id.bytes)
    except InvalidTag as error:
        raise LookupError("the invitation token does not decrypt with the master key") from error
    return plain.decode("ascii")


async def record(
    conn: AnyConnection, mail: InvitationMail, invitation_id: uuid.UUID, token: str
) -> str:
    """The owed e-mail, in the invitation's transaction; its Message-ID."""
    message_id = f"<invitation.{invitation_id}@{message_domain(mail.relay)}>"
    await conn.execute(
        "INSERT INTO invitation_emails (invitation_id, message_id, key_id, token_sealed) "
        "VALUES ($1, $2, $3, $4)",
        invitation_id,
        message_id,
        mail.keys.current,
        _seal(mail.keys, invitation_id, token),
    )
    return message_id


def compose(
    mail: InvitationMail,
    *,
    to: str,
    tenant: str,
    role: str,
    expires_at: datetime,
    token: str,
    message_id: str,
) -> EmailMessage:
    link = f"{mail.accept_url}#token={quote(token, safe='')}"
    message = EmailMessage()
    message["From"] = mail.relay.from_address
    message["To"] = to
    message["Subject"] = f"You are invited to {tenant} on PenguinMails"
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = message_id
    # RFC 3834: an automatic message, so that no auto-responder answers it.
    message["Auto-Submitted"] = "auto-generated"
    message["X-PenguinMails-Notice"] = "invitation"
    message.set_content(
        f"You are invited to join the tenant {tenant} on PenguinMails as {role}.\n\n"
        f"Accept here (the link is good once, until {expires_at:%Y-%m-%d %H:%M} UTC, and only "
        f"for {to}):\n\n{link}\n\n"
        'Or through the API: POST /v1/invitations/accept with {"token": "' + token + '"} '
        'and your access token, or with a "password" for a new account.\n\n'
        "If you did not expect this, ignore it: nothing happens unless the link is used.\n"
    )
    return message


async def _claim(conn: AnyConnection, only: uuid.UUID | None) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "WITH owed AS (UPDATE invitation_emails SET claimed_until = now() + $1::interval, "
            "attempts = attempts + 1 "
            "WHERE sent_at IS NULL AND error IS NULL "
            "AND (claimed_until IS NULL OR claimed_until < now()) "
            "AND ($2::uuid IS NULL OR invitation_id = $2) "
            "RETURNING invitation_id, message_id, key_id, token_sealed) "
            "SELECT o.*, i.email, i.role, i.expires_at, t.name AS tenant "
            "FROM owed o JOIN invitations i ON i.id = o.invitation_id "
            "JOIN tenants t ON t.id = i.tenant_id",
            CLAIM,
            only,
        )
    )


async def _finish(pool: asyncpg.Pool, invitation_id: uuid.UUID, outcome: Delivery) -> None:
    done = outcome.sent or outcome.refusal is not None
    await pool.execute(
        "UPDATE invitation_emails SET claimed_until = NULL, "
        "sent_at = CASE WHEN $2 THEN now() END, error = $3, "
        "token_sealed = CASE WHEN $4 THEN NULL ELSE token_sealed END "
        "WHERE invitation_id = $1",
        invitation_id,
        outcome.sent,
        outcome.refusal,
        done,
    )


async def send_owed(
    pool: asyncpg.Pool, mail: InvitationMail, only: uuid.UUID | None = None
) -> dict[uuid.UUID, Delivery]:
    """Send the owed invitation e-mails (just `only`'s when given); each one's outcome."""
    async with pool.acquire() as conn:
        rows = await _claim(conn, only)
    outcomes: dict[uuid.UUID, Delivery] = {}
    for row in rows:
        invitation_id: uuid.UUID = row["invitation_id"]
        try:
            token = _unseal(mail.keys, invitation_id, row["key_id"], bytes(row["token_sealed"]))
        except LookupError as error:
            outcome = Delivery(sent=False, refusal=f"not sent: {error}")
        else:
            message = compose(
                mail,
                to=row["email"],
                tenant=row["tenant"],
                role=row["role"],
                expires_at=row["expires_at"].astimezone(UTC),
                token=token,
                message_id=row["message_id"],
            )
            outcome = await deliver(message, mail.relay)
        if not outcome.sent:
            why = outcome.refusal or f"{outcome.problem}, tried again later"
            log.warning("invitation e-mail %s not sent: %s", invitation_id, why)
        await _finish(pool, invitation_id, outcome)
        outcomes[invitation_id] = outcome
    return outcomes


def with_from(relay: NoticeSettings, from_address: str) -> NoticeSettings:
    """The relay's settings with the invitations' own From."""
    return replace(relay, from_address=from_address)
