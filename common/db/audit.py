"""The audit log: every write, with who, what, which object, from where and in which request.

The table (`audit_log`, migration 0006) is append-only: the application role and the tenants'
logins may insert and read their own tenant's entries, and neither may update or delete one
(no grant; only the table owner can, and the GDPR erasure's `scrub_audit_address()` replaces an
erased address inside entries). `id`, `tenant_id` and `at` are set by the database.

Every function runs inside the caller's tenant scope (`tenant_scope()` / `tenant_connection()`,
or a tenant's own login):

    async with tenant_connection(pool, tenant_id) as conn:
        await audit.record(conn, audit.Context("user:42", "203.0.113.9", "req_1"),
                           "webhook_endpoint.create", target="webhook_endpoint:<id>")
        page = await audit.list_entries(conn, action="webhook_endpoint.create", limit=20)
        more = await audit.list_entries(conn, action=..., cursor=page.next_cursor)

Pages are newest first; the cursor is opaque to callers (the last id of the page, encoded), and
a forged one can only move within the tenant's own rows.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from penguinmails.common.db import AnyConnection

__all__ = [
    "MAX_PAGE",
    "AuditEntry",
    "AuditError",
    "AuditPage",
    "Context",
    "decode_cursor",
    "encode_cursor",
    "list_entries",
    "record",
]

MAX_PAGE = 100
"""The largest page `list_entries` returns."""

_ACTION = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_CURSOR_PREFIX = "au1."


class AuditError(ValueError):
    """Bad input, naming the field (the API turns it into an error object with `param`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Context:
    """Who is acting and from where: one per request, passed to everything that audits."""

    actor: str
    """"user:<id>", "api_key:<id>", "operator", "system:<component>"."""
    source_address: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    source_address: str | None
    request_id: str | None
    details: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "source_address": self.source_address,
            "request_id": self.request_id,
            "details": self.details,
        }


@dataclass(frozen=True)
class AuditPage:
    entries: list[AuditEntry]
    next_cursor: str | None
    """Pass back as `cursor` for the next (older) page; None on the last page."""


def _entry(row: Any) -> AuditEntry:
    return AuditEntry(
        id=row["id"],
        at=row["at"],
        actor=row["actor"],
        action=row["action"],
        target=row["target"],
        source_address=row["source_address"],
        request_id=row["request_id"],
        details=json.loads(row["details"]),
    )


def _check_action(action: str, field: str = "action") -> str:
    if len(action) > 100 or not _ACTION.match(action):
        raise AuditError(
            field,
            f"{action[:100]!r} is not an action: use dotted lower-case words, e.g. 'contact.erase'",
        )
    return action


def _check_address(address: str | None) -> str | None:
    if address is None:
        return None
    try:
        return str(ipaddress.ip_address(address.strip().strip("[]")))
    except ValueError:
        raise AuditError(
            "source_address", f"{address[:60]!r} is not an IP address, e.g. 203.0.113.9"
        ) from None


async def record(
    conn: AnyConnection,
    context: Context,
    action: str,
    *,
    target: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append one entry for the current tenant and return it as stored."""
    if not context.actor or len(context.actor) > 200:
        raise AuditError("actor", "must be 1 to 200 characters, e.g. 'user:42'")
    if target is not None and len(target) > 500:
        raise AuditError("target", "must be at most 500 characters, e.g. 'contact:<id>'")
    if context.request_id is not None and len(context.request_id) > 200:
        raise AuditError("request_id", "must be at most 200 characters")
    row = await conn.fetchrow(
        """
        INSERT INTO audit_log (actor, action, target, source_address, request_id, details)
        VALUES ($1, $2, $3, $4::inet, $5, $6::jsonb)
        RETURNING id, at, actor, action, target, host(source_address) AS source_address,
                  request_id, details
        """,
        context.actor,
        _check_action(action),
        target,
        _check_address(context.source_address),
        context.request_id,
        json.dumps(details or {}, sort_keys=True),
    )
    assert row is not None
    return _entry(row)


def encode_cursor(last_id: int) -> str:
    raw = f"{_CURSOR_PREFIX}{last_id}".encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> int:
    bad = AuditError("cursor", "is not a cursor returned by this list; start again without one")
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise bad from None
    if not text.startswith(_CURSOR_PREFIX) or not text[len(_CURSOR_PREFIX) :].isdigit():
        raise bad
    return int(text[len(_CURSOR_PREFIX) :])


async def list_entries(
    conn: AnyConnection,
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> AuditPage:
    """The current tenant's entries, newest first, filtered by exact actor, action (or an action
    prefix ending in `.*`, e.g. `contact.*`) and target, and by time: `since` <= at < `until`."""
    if not 1 <= limit <= MAX_PAGE:
        raise AuditError("limit", f"must be between 1 and {MAX_PAGE}")
    if since is not None and since.tzinfo is None:
        raise AuditError("since", "needs a time zone, e.g. 2026-12-01T00:00:00Z")
    if until is not None and until.tzinfo is None:
        raise AuditError("until", "needs a time zone, e.g. 2026-12-01T00:00:00Z")
    action_prefix: str | None = None
    if action is not None and action.endswith(".*"):
        action_prefix = _check_action(action[:-2] + ".x")[:-1]
        action = None
    elif action is not None:
        _check_action(action)
    before = decode_cursor(cursor) if cursor is not None else None
    rows = await conn.fetch(
        """
        SELECT id, at, actor, action, target, host(source_address) AS source_address,
               request_id, details
        FROM audit_log
        WHERE ($1::text IS NULL OR actor = $1)
          AND ($2::text IS NULL OR action = $2)
          AND ($3::text IS NULL OR starts_with(action, $3))
          AND ($4::text IS NULL OR target = $4)
          AND ($5::timestamptz IS NULL OR at >= $5)
          AND ($6::timestamptz IS NULL OR at < $6)
          AND ($7::bigint IS NULL OR id < $7)
        ORDER BY id DESC
        LIMIT $8
        """,
        actor,
        action,
        action_prefix,
        target,
        since,
        until,
        before,
        limit + 1,
    )
    entries = [_entry(row) for row in rows[:limit]]
    more = len(rows) > limit
    return AuditPage(entries, encode_cursor(entries[-1].id) if more and entries else None)
