"""Intake of what comes back to a campaign's addresses: bounces, complaints, mailto unsubscribes.

Mail to `bounces+TOKEN@<domain>` (the return-path) carries delivery status notifications
(RFC 3464) and feedback reports (RFC 5965); mail to `unsubscribe+TOKEN@<domain>` is the mailto
half of List-Unsubscribe. `ingest()` parses one message, finds its delivery from the token
(HMAC-checked: forged tokens are ignored), and records it:

* permanent failure for a mailbox reason (5.1.1 ...): delivery `bounced`, address suppressed;
* complaint: delivery marked complained, address suppressed (reason complaint);
* unsubscribe: delivery marked unsubscribed, address suppressed;
* delays (4.x.x) and 5.7.x (our own authentication problem) never suppress anybody.

`IntakeHandler` serves it over SMTP with aiosmtpd (point the return-path domain's MX at it).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import asyncpg

from penguinmails.common.db import tenant_connection
from penguinmails.common.db.ledger import mark_bounced, mark_complained, mark_unsubscribed
from penguinmails.common.keys import MasterKeys
from penguinmails.common.suppression import (
    SuppressionReason,
    TokenPurpose,
    read_token,
    suppress,
)
from penguinmails.sender.bounces import Kind, ReportType, parse_report, token_from_address

__all__ = ["IntakeHandler", "IntakeResult", "ingest"]

log = logging.getLogger(__name__)


class IntakeResult(StrEnum):
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    UNSUBSCRIBED = "unsubscribed"
    IGNORED = "ignored"


@dataclass(frozen=True)
class _Target:
    tenant_id: uuid.UUID
    delivery_id: int


def _target(keys: MasterKeys, token: str | None) -> _Target | None:
    if token is None:
        return None
    for purpose in (TokenPurpose.BOUNCE, TokenPurpose.UNSUBSCRIBE):
        found = read_token(keys, purpose, token)
        if found is not None:
            return _Target(*found)
    return None


async def ingest(
    pool: asyncpg.Pool, keys: MasterKeys, raw: bytes, envelope_to: str
) -> IntakeResult:
    local = envelope_to.partition("@")[0].lower()
    if local.startswith("unsubscribe+"):
        target = _target(keys, token_from_address(envelope_to))
        if target is None:
            return IntakeResult.IGNORED
        async with tenant_connection(pool, target.tenant_id) as conn:
            hashed = await mark_unsubscribed(conn, target.delivery_id)
            if hashed is not None:
                await suppress(conn, hashed, SuppressionReason.UNSUBSCRIBED, "mailto")
        return IntakeResult.UNSUBSCRIBED if hashed is not None else IntakeResult.IGNORED
    report = parse_report(raw, envelope_to)
    if report is None:
        return IntakeResult.IGNORED
    target = _target(keys, report.token)
    if target is None:
        return IntakeResult.IGNORED
    async with tenant_connection(pool, target.tenant_id) as conn:
        if report.type == ReportType.COMPLAINT:
            hashed = await mark_complained(conn, target.delivery_id)
            if hashed is not None:
                await suppress(conn, hashed, SuppressionReason.COMPLAINT, "arf")
                return IntakeResult.COMPLAINED
            return IntakeResult.IGNORED
        verdict = report.verdict
        if report.type != ReportType.BOUNCE or verdict is None:
            return IntakeResult.IGNORED
        if verdict.kind == Kind.HARD_BOUNCE:
            await mark_bounced(conn, target.delivery_id, verdict.status, verdict.text[:500])
            hashed = await conn.fetchval(
                "SELECT address_hash FROM deliveries WHERE id = $1", target.delivery_id
            )
            if isinstance(hashed, bytes):
                await suppress(conn, hashed, SuppressionReason.HARD_BOUNCE, "dsn")
            return IntakeResult.BOUNCED
        if verdict.kind == Kind.FAIL:
            await mark_bounced(conn, target.delivery_id, verdict.status, verdict.text[:500])
            return IntakeResult.BOUNCED
    return IntakeResult.IGNORED


class IntakeHandler:
    """aiosmtpd handler: accepts everything addressed to bounces+/unsubscribe+ and ingests it.

    The database pool is opened on first use, in the loop aiosmtpd runs the handler in (its
    own thread), since an asyncpg pool belongs to the loop it was created in."""

    def __init__(self, dsn: str, keys: MasterKeys) -> None:
        self.dsn = dsn
        self.keys = keys
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
        if not local.startswith(("bounces+", "unsubscribe+")):
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
