"""Replies to campaign messages: recognised, matched to their delivery, recorded.

How a reply reaches us (docs/sending.md, "Replies"): the customer's mailbox server keeps
receiving replies as any mailbox does, and also sends a copy of its inbound mail (Postfix
`recipient_bcc_maps`, a Sieve `redirect :copy`, a forwarding rule) to the tenant's reply
address, `replies+<token>@<a domain whose replies+ mail reaches the intake>`. The token is a
`TokenPurpose.REPLY` token naming the tenant only (delivery id 0; `reply_address()` in
common/suppression.py, which the API's `GET /v1/tenants/{t}/reply-address` shows): it says
whose ledger to look in, and nobody can make the intake look in another tenant's.

A copy is a reply to delivery D when its In-Reply-To (else its References, newest first)
holds the Message-ID the sender gave D, `<campaign-uid.delivery-id@mailbox-domain>`
(sender/render.py), and the ledger, read under that tenant's scope only (row-level
security), has D sent from that domain in that campaign. A Message-ID of another tenant's
message matches nothing. Auto-replies (RFC 3834 `Auto-Submitted` other than `no`,
`X-Autoreply`/`X-Autorespond`, `Precedence: bulk/auto_reply/junk/list`) are out-of-office
notices, not conversations: ignored. The first reply sets `deliveries.replied_at` (migration
0015) and emits `delivery.replied`; later ones in the thread change nothing.

Campaigns have no follow-up steps (one message per contact), so there is nothing further to
stop; when steps come, a reply is where they stop for that contact.
"""

from __future__ import annotations

import email
import email.policy
import logging
import re
import uuid
from dataclasses import dataclass
from email.message import Message

from penguinmails.common.db import AnyConnection
from penguinmails.common.keys import MasterKeys
from penguinmails.common.suppression import REPLY_PREFIX, TokenPurpose, read_token, reply_address
from penguinmails.common.webhook_events import delivery_event
from penguinmails.common.webhooks import EventType

__all__ = [
    "REPLY_PREFIX",
    "MessageRef",
    "is_auto_reply",
    "record_reply",
    "referenced_messages",
    "reply_address",
    "reply_tenant",
]

log = logging.getLogger(__name__)

_MAX_REFERENCES = 20
"""A thread's References grow by one id per message; ours is near the end of a real reply's
list, and a stranger's list of thousands must not cost thousands of lookups."""

# `<32 hex>.<digits>@domain>`: the form sender/render.py's message_id() writes.
_OUR_ID = re.compile(r"<([0-9a-f]{32})\.([0-9]{1,18})@([^<>@\s]+)>", re.IGNORECASE)
_ANY_ID = re.compile(r"<[^<>]*>")
_AUTO_PRECEDENCE = {"bulk", "auto_reply", "junk", "list"}


@dataclass(frozen=True)
class MessageRef:
    """One of our Message-IDs, as quoted in a reply."""

    campaign_uid: uuid.UUID
    delivery_id: int
    domain: str


def reply_tenant(keys: MasterKeys, token: str | None) -> uuid.UUID | None:
    """The tenant a reply address's token names; None for anything else (a bounce or
    unsubscribe token, a forged one)."""
    if token is None:
        return None
    found = read_token(keys, TokenPurpose.REPLY, token)
    return found[0] if found is not None and found[1] == 0 else None


def parse(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def is_auto_reply(message: Message) -> bool:
    """RFC 3834 and the de-facto headers of vacation responders (Exchange, Gmail, Zimbra...)."""
    auto_submitted = str(message.get("Auto-Submitted", "")).strip().lower()
    if auto_submitted and auto_submitted.split(";")[0].strip() != "no":
        return True
    if message.get("X-Autoreply") is not None or message.get("X-Autorespond") is not None:
        return True
    precedence = str(message.get("Precedence", "")).strip().lower()
    return precedence in _AUTO_PRECEDENCE


def referenced_messages(message: Message) -> list[MessageRef]:
    """Our Message-IDs the message answers: In-Reply-To first (the message replied to), then
    References newest first; each once, at most `_MAX_REFERENCES` ids looked at."""
    ids = _ANY_ID.findall(str(message.get("In-Reply-To", "")))
    ids += reversed(_ANY_ID.findall(str(message.get("References", ""))))
    found: list[MessageRef] = []
    for text in dict.fromkeys(i.lower() for i in ids[:_MAX_REFERENCES]):
        match = _OUR_ID.fullmatch(text)
        if match is not None:
            uid, delivery, domain = match.groups()
            found.append(MessageRef(uuid.UUID(hex=uid), int(delivery), domain.rstrip(".")))
    return found


# Under the tenant's scope (row-level security): another tenant's delivery is not there. The
# domain must be the one the Message-ID was made with: the mailbox's (sender/render.py).
_MATCH_SQL = """
SELECT id, replied_at IS NOT NULL AS replied
  FROM deliveries
 WHERE id = $1 AND campaign_uid = $2 AND sent_at IS NOT NULL
   AND (mailbox IS NULL OR lower(split_part(mailbox, '@', 2)) = $3)
   FOR UPDATE
"""


async def record_reply(conn: AnyConnection, message: Message) -> int | None:
    """Record the reply `message` (the caller has checked it is not an auto-reply) against
    the delivery it answers, in the tenant scope `conn` is in. Returns the delivery's id when
    this is its first reply (`replied_at` set, `delivery.replied` emitted), else None."""
    for ref in referenced_messages(message):
        row = await conn.fetchrow(_MATCH_SQL, ref.delivery_id, ref.campaign_uid, ref.domain)
        if row is None:
            continue
        if row["replied"]:
            log.info("reply to delivery %d: replied before", ref.delivery_id)
            return None
        await conn.execute(
            "UPDATE deliveries SET replied_at = now() WHERE id = $1", ref.delivery_id
        )
        await delivery_event(conn, EventType.REPLIED, ref.delivery_id)
        log.info("reply to delivery %d recorded", ref.delivery_id)
        return ref.delivery_id
    log.info("reply matching none of this tenant's messages ignored")
    return None
