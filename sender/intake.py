"""Intake of what comes back to a campaign's addresses: bounces, complaints, mailto unsubscribes.

Mail to `bounces+TOKEN@<domain>` (the return-path) carries delivery status notifications
(RFC 3464) and feedback reports (RFC 5965); mail to `unsubscribe+TOKEN@<domain>` is the mailto
half of List-Unsubscribe; feedback loops (Yahoo, Microsoft JMRP...) send ARF reports to a fixed
address registered with them (`PM_COMPLAINT_ADDRESS`, comma-separated). `ingest()` parses one
message, finds its delivery from the bounce token (HMAC-checked and purpose-checked: a forged
token, or an unsubscribe token quoted in a forged complaint, is ignored), and records it:

* a DSN for a message the relay accepted: the delivery goes `sent` -> `bounced` (it counts in
  the campaign's bounce rate); the address is suppressed only for a recipient-specific status
  (5.1.1/5.1.2/5.1.3/5.1.6/5.1.10/5.2.1); a domain-authentication failure (5.7.26, 5.7.515...)
  also pauses that campaign (`pause_reason`), as the same reply from the relay does; a policy
  or reputation block (5.7.1...) is a strike against the server that carried it (or its
  domain), recorded for every sender (common.db.blocks), as the same reply from the relay is;
* complaint: delivery marked complained (the complaint rate), address suppressed;
* unsubscribe: delivery marked unsubscribed, address suppressed;
* delays (4.x.x), success notices and anything else change nothing;
* a copy of a reply, sent to the tenant's `replies+TOKEN@<domain>` by the customer's mailbox
  server: recorded against the delivery it answers (sender/replies.py), auto-replies ignored.

`IntakeHandler` serves it over SMTP with aiosmtpd (point the return-path domain's MX at it);
`intake_server()` builds the server with its size limit (`PM_INTAKE_MAX_BYTES`).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import asyncpg
from aiosmtpd.controller import Controller

from penguinmails.common.db import AnyConnection, tenant_connection
from penguinmails.common.db.blocks import Block, BlockScope, add_blocks, delivery_route
from penguinmails.common.db.ledger import (
    enforce_stop_rules,
    get_campaign_plan,
    mark_bounced,
    mark_complained,
    mark_unsubscribed,
    pause_campaign,
)
from penguinmails.common.keys import MasterKeys
from penguinmails.common.suppression import (
    SuppressionReason,
    TokenPurpose,
    read_token,
    suppress,
)
from penguinmails.common.webhook_events import delivery_event, unsubscribed_before
from penguinmails.common.webhooks import EventType
from penguinmails.sender import replies
from penguinmails.sender.bounces import (
    Kind,
    ReportType,
    Verdict,
    block_scope,
    parse_report,
    token_from_address,
)

__all__ = [
    "COMPLAINT_ADDRESS_ENV",
    "DEFAULT_MAX_BYTES",
    "MAX_BYTES_ENV",
    "IntakeHandler",
    "IntakeResult",
    "complaint_addresses",
    "ingest",
    "intake_server",
    "max_message_bytes",
]

log = logging.getLogger(__name__)

COMPLAINT_ADDRESS_ENV = "PM_COMPLAINT_ADDRESS"
MAX_BYTES_ENV = "PM_INTAKE_MAX_BYTES"
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
"""A DSN or ARF report quotes at most one of our messages: 10 MiB is ample, and bounds what
a stranger can make the intake hold in memory (SMTP SIZE, 552 above it)."""


class IntakeResult(StrEnum):
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    UNSUBSCRIBED = "unsubscribed"
    REPLIED = "replied"
    IGNORED = "ignored"


@dataclass(frozen=True)
class _Target:
    tenant_id: uuid.UUID
    delivery_id: int


def _target(keys: MasterKeys, purpose: TokenPurpose, token: str | None) -> _Target | None:
    if token is None:
        return None
    found = read_token(keys, purpose, token)
    return _Target(*found) if found is not None else None


def complaint_addresses(value: str | None = None) -> frozenset[str]:
    """The fixed addresses feedback loops report to (`PM_COMPLAINT_ADDRESS`), lower-cased."""
    text = os.environ.get(COMPLAINT_ADDRESS_ENV, "") if value is None else value
    addresses = frozenset(a.strip().lower() for a in text.split(",") if a.strip())
    for address in addresses:
        local, at, domain = address.partition("@")
        if not (local and at and domain):
            raise ValueError(
                f"{COMPLAINT_ADDRESS_ENV}: {address!r} is not an address; write "
                "fbl@your-domain (several: comma-separated)"
            )
    return addresses


def max_message_bytes(value: str | None = None) -> int:
    """The intake's message size limit (`PM_INTAKE_MAX_BYTES`, 10 MiB by default)."""
    text = os.environ.get(MAX_BYTES_ENV, "") if value is None else value
    if not text.strip():
        return DEFAULT_MAX_BYTES
    if not text.strip().isdigit() or int(text) < 1024:
        raise ValueError(
            f"{MAX_BYTES_ENV} must be a number of bytes of at least 1024 (default "
            f"{DEFAULT_MAX_BYTES}), not {text!r}"
        )
    return int(text)


async def ingest(
    pool: asyncpg.Pool, keys: MasterKeys, raw: bytes, envelope_to: str
) -> IntakeResult:
    local = envelope_to.partition("@")[0].lower()
    if local.startswith(replies.REPLY_PREFIX):
        return await _ingest_reply(pool, keys, raw, envelope_to)
    if local.startswith("unsubscribe+"):
        target = _target(keys, TokenPurpose.UNSUBSCRIBE, token_from_address(envelope_to))
        if target is None:
            return IntakeResult.IGNORED
        async with tenant_connection(pool, target.tenant_id) as conn:
            repeated = await unsubscribed_before(conn, target.delivery_id)
            hashed = await mark_unsubscribed(conn, target.delivery_id)
            if hashed is not None:
                await suppress(conn, hashed, SuppressionReason.UNSUBSCRIBED, "mailto")
                if not repeated:
                    await delivery_event(conn, EventType.UNSUBSCRIBED, target.delivery_id)
        return IntakeResult.UNSUBSCRIBED if hashed is not None else IntakeResult.IGNORED
    report = parse_report(raw, envelope_to)
    if report is None:
        return IntakeResult.IGNORED
    # Only a bounce token names a delivery here: a complaint quoting the unsubscribe token
    # from List-Unsubscribe (which every recipient has) is refused.
    target = _target(keys, TokenPurpose.BOUNCE, report.token)
    if target is None:
        log.info("%s report without a valid bounce token ignored", report.type)
        return IntakeResult.IGNORED
    async with tenant_connection(pool, target.tenant_id) as conn:
        if report.type == ReportType.COMPLAINT:
            hashed = await mark_complained(conn, target.delivery_id)
            if hashed is not None:
                await suppress(conn, hashed, SuppressionReason.COMPLAINT, "arf")
                await delivery_event(conn, EventType.COMPLAINED, target.delivery_id)
                await _check_stop_rules(conn, target.delivery_id)
                return IntakeResult.COMPLAINED
            return IntakeResult.IGNORED
        verdict = report.verdict
        if report.type != ReportType.BOUNCE or verdict is None or verdict.kind == Kind.SENT:
            return IntakeResult.IGNORED
        reason = f"DSN {verdict.status}: {verdict.text}"[:500]
        hashed = await mark_bounced(conn, target.delivery_id, verdict.status, reason)
        if hashed is None:
            return IntakeResult.IGNORED  # already bounced, or never handed to a relay
        if verdict.kind == Kind.HARD_BOUNCE:
            await suppress(conn, hashed, SuppressionReason.HARD_BOUNCE, "dsn")
        if verdict.kind in (Kind.BLOCK, Kind.AUTH):
            await _record_block(conn, target.delivery_id, verdict)
        await delivery_event(
            conn,
            EventType.BOUNCED,
            target.delivery_id,
            status=verdict.status,
            kind=verdict.kind.value,
        )
        campaign_uid = await _check_stop_rules(conn, target.delivery_id)
        if verdict.kind == Kind.AUTH and campaign_uid is not None:
            await pause_campaign(conn, campaign_uid, f"receiver refused with {reason}"[:300])
            log.warning("campaign %s paused: DSN %s", campaign_uid, verdict.status)
    return IntakeResult.BOUNCED


async def _ingest_reply(
    pool: asyncpg.Pool, keys: MasterKeys, raw: bytes, envelope_to: str
) -> IntakeResult:
    """A copy of inbound mail from a tenant's mailbox server: the tenant is the reply
    address's, and only that tenant's ledger is searched (a forged In-Reply-To quoting
    another tenant's Message-ID finds nothing)."""
    tenant_id = replies.reply_tenant(keys, token_from_address(envelope_to))
    if tenant_id is None:
        log.info("reply copy to an address without a valid reply token ignored")
        return IntakeResult.IGNORED
    message = replies.parse(raw)
    if replies.is_auto_reply(message):
        log.info("auto-reply ignored (RFC 3834)")
        return IntakeResult.IGNORED
    async with tenant_connection(pool, tenant_id) as conn:
        delivery_id = await replies.record_reply(conn, message)
    return IntakeResult.REPLIED if delivery_id is not None else IntakeResult.IGNORED


async def _record_block(conn: AnyConnection, delivery_id: int, verdict: Verdict) -> None:
    """A receiver's policy/reputation block: a strike against the server that carried the
    delivery (or its From domain, when the receiver names the domain), which every sender
    reads (sender/engine.py skips it after BLOCK_STRIKES), as for the same reply from a relay.
    An authentication failure (DKIM/SPF/DMARC) is always the From domain's: every campaign
    sending from it would fail the same way."""
    relay, mailbox = await delivery_route(conn, delivery_id)
    scope = BlockScope.DOMAIN if verdict.kind == Kind.AUTH else block_scope(verdict.text)
    target = relay if scope == BlockScope.SERVER else (mailbox or "").rpartition("@")[2].lower()
    if not target:
        # Sent before the ledger recorded servers (migration 0012): nobody to blame.
        log.info("DSN %s for delivery %d: no %s recorded", verdict.status, delivery_id, scope)
        return
    await add_blocks(conn, [Block(scope, target, "dsn", delivery_id, verdict.status)])
    log.info(
        "DSN %s for delivery %d: a strike against %s %s", verdict.status, delivery_id, scope, target
    )


async def _check_stop_rules(conn: AnyConnection, delivery_id: int) -> uuid.UUID | None:
    """A bounce or complaint just counted: close the campaign's gate now if a stop rule
    fires (senders stop claiming; the operator shows it Stopped). Returns the campaign."""
    uid = await conn.fetchval("SELECT campaign_uid FROM deliveries WHERE id = $1", delivery_id)
    if not isinstance(uid, uuid.UUID):
        return None
    plan = await get_campaign_plan(conn, uid)
    if plan is not None and plan.stop_rules is not None:
        stopped, _ = await enforce_stop_rules(conn, uid, plan.stop_rules)
        if stopped is not None:
            log.warning("campaign %s stopped: %s", uid, stopped)
    return uid


class IntakeHandler:
    """aiosmtpd handler: accepts mail to bounces+/unsubscribe+/replies+ addresses and to the
    complaint addresses, and ingests it.

    The database pool is opened on first use, in the loop aiosmtpd runs the handler in (its
    own thread), since an asyncpg pool belongs to the loop it was created in."""

    def __init__(
        self, dsn: str, keys: MasterKeys, complaint_to: Iterable[str] | None = None
    ) -> None:
        self.dsn = dsn
        self.keys = keys
        self.complaint_to = (
            frozenset(a.lower() for a in complaint_to)
            if complaint_to is not None
            else complaint_addresses()
        )
        self.results: list[IntakeResult] = []
        self._pool: asyncpg.Pool | None = None

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=2)
        return self._pool

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        local = address.partition("@")[0].lower()
        if address.lower() not in self.complaint_to and not local.startswith(
            ("bounces+", "unsubscribe+", replies.REPLY_PREFIX)
        ):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        raw = envelope.original_content or b""
        for rcpt in envelope.rcpt_tos:
            try:
                result = await ingest(await self._get_pool(), self.keys, raw, rcpt)
            except (asyncpg.PostgresError, OSError) as error:
                log.warning("intake failed, asking to retry: %s", error)
                return "451 4.3.0 try again later"
            self.results.append(result)
        return "250 2.0.0 OK"


def intake_server(
    handler: IntakeHandler, host: str, port: int, max_bytes: int | None = None
) -> Controller:
    """The aiosmtpd server of the intake: SIZE advertised, larger messages refused with 552."""
    limit = max_message_bytes() if max_bytes is None else max_bytes
    return Controller(handler, hostname=host, port=port, data_size_limit=limit)
