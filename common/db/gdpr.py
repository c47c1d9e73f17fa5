"""GDPR: export everything a tenant holds about one e-mail address, and erase it.

Where an address lives (migrations 0001-0006), within one tenant, and what erasure does:

- `contacts` (`email`, `fields`, `address_hash`): exported with their lists; deleted.
- other contacts' `fields` naming the address: exported under `mentions`; the address replaced.
- `deliveries` (the ledger: keyed `address_hash`, `contact_id`, `reason` and `last_status`,
  which hold SMTP replies): exported; `contact_id` nulled (by the delete), the reply text of its
  own rows replaced by `[erased]` (a reply may quote more than the address, e.g. a name; an
  enhanced status code such as `5.1.1` is kept), the address replaced in other rows' replies.
- `campaigns.pause_reason` (a receiver's reply can quote the address): `mentions`; replaced.
- `suppressions`: only ever the keyed hash (HMAC under the platform's key), so it is exported
  (reason, date) and kept, or added (reason `manual`, source `gdpr-erasure`): an erased
  address is never mailed again, also when it is imported again.
- `audit_log`, `tenant_audit_events` (free text): `mentions`; the address replaced by
  `scrub_audit_address()`, the one way the append-only log changes (migration 0006).
- `webhook_events`, `webhook_attempts` (event payloads, receivers' responses): `mentions`;
  the events and attempts naming it deleted.

Delivery rows themselves are kept (keyed hash, state, codes): campaign statistics stay true, and
nothing in them identifies the person without the platform's key.

Both functions run inside the caller's tenant scope (`tenant_connection()`), erasure in one
transaction (all or nothing), and each records an audit entry whose target is the keyed hash,
never the address: `address:<hex>`.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from penguinmails.common.db import AnyConnection
from penguinmails.common.db.audit import Context, record
from penguinmails.common.suppression import address_hash, normalize_address

__all__ = [
    "ERASED",
    "EXPORT_FORMAT",
    "ErasureReport",
    "GdprError",
    "erase_contact",
    "export_contact",
]

ERASED = "[erased]"
"""What an erased address (or a reply naming it) is replaced by."""
EXPORT_FORMAT = "penguinmails.contact-export/v1"


class GdprError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class ErasureReport:
    contacts_deleted: int
    contact_fields_scrubbed: int
    deliveries_scrubbed: int
    campaigns_scrubbed: int
    audit_entries_scrubbed: int
    webhook_events_deleted: int
    webhook_attempts_deleted: int
    suppression_added: bool


def _hashed(key: bytes, address: str) -> tuple[bytes, str]:
    try:
        return address_hash(key, address), normalize_address(address)
    except ValueError:
        raise GdprError(
            "email", f"{address[:100]!r} is not an e-mail address, e.g. jane@example.com"
        ) from None


def _target(hashed: bytes) -> str:
    return f"address:{hashed.hex()}"


def _replace(value: Any, pattern: re.Pattern[str]) -> Any:
    """`value` (decoded JSON) with the address replaced in every string, keys included."""
    if isinstance(value, str):
        return pattern.sub(ERASED, value)
    if isinstance(value, list):
        return [_replace(item, pattern) for item in value]
    if isinstance(value, dict):
        return {pattern.sub(ERASED, k): _replace(v, pattern) for k, v in value.items()}
    return value


async def _needles(conn: AnyConnection, hashed: bytes, address: str, normalized: str) -> list[str]:
    """Every spelling of the address this tenant stored (lower-cased): the one given, the
    normalized one (IDNA domain) and those of the matching contacts."""
    stored = await conn.fetch(
        "SELECT DISTINCT lower(email) AS email FROM contacts "
        "WHERE address_hash = $1 OR lower(email) = ANY($2::text[])",
        hashed,
        [normalized, address.strip().lower()],
    )
    return sorted({normalized, address.strip().lower(), *(row["email"] for row in stored)})


def _like(needles: list[str]) -> list[str]:
    """LIKE patterns (for `lower(text) LIKE ANY($n)`) matching text that contains a needle."""
    escaped = (n.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") for n in needles)
    return [f"%{n}%" for n in escaped]


# Other rows naming the address, as (where, query over $1 LIKE patterns and $2 the keyed hash).
_MENTIONS = (
    (
        "contacts.fields",
        "SELECT id::text AS id, fields::text AS text FROM contacts "
        "WHERE address_hash IS DISTINCT FROM $2 AND lower(fields::text) LIKE ANY($1::text[])",
    ),
    (
        "deliveries",
        "SELECT id::text AS id, concat_ws(' ', last_status, reason) AS text FROM deliveries "
        "WHERE address_hash <> $2 "
        "AND lower(concat_ws(' ', last_status, reason)) LIKE ANY($1::text[])",
    ),
    (
        "campaigns.pause_reason",
        "SELECT uid::text AS id, pause_reason AS text FROM campaigns "
        "WHERE $2::bytea IS NOT NULL AND lower(pause_reason) LIKE ANY($1::text[])",
    ),
    (
        "audit_log",
        "SELECT id::text AS id, concat_ws(' ', actor, target, request_id, details::text) AS text "
        "FROM audit_log WHERE $2::bytea IS NOT NULL "
        "AND lower(concat_ws(' ', actor, target, request_id, details::text)) "
        "LIKE ANY($1::text[])",
    ),
    (
        "tenant_audit_events",
        "SELECT id::text AS id, concat_ws(' ', kind, message) AS text FROM tenant_audit_events "
        "WHERE $2::bytea IS NOT NULL AND lower(concat_ws(' ', kind, message)) LIKE ANY($1::text[])",
    ),
    (
        "webhook_events",
        "SELECT id, payload::text AS text FROM webhook_events "
        "WHERE $2::bytea IS NOT NULL AND lower(payload::text) LIKE ANY($1::text[])",
    ),
)


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def export_contact(
    conn: AnyConnection, key: bytes, address: str, context: Context
) -> dict[str, Any]:
    """Everything the current tenant holds about `address`, as a JSON-ready document."""
    hashed, normalized = _hashed(key, address)
    needles = await _needles(conn, hashed, address, normalized)
    contacts = await conn.fetch(
        """
        SELECT c.id, c.email, c.fields, c.created_at, c.updated_at, l.id AS list_id,
               l.name AS list_name
        FROM contacts c JOIN contact_lists l ON l.id = c.list_id
        WHERE c.address_hash = $1 OR lower(c.email) = ANY($2::text[])
        ORDER BY c.created_at, c.id
        """,
        hashed,
        needles,
    )
    deliveries = await conn.fetch(
        """
        SELECT d.id, d.campaign_uid, c.namespace, c.name AS campaign, d.state, d.attempts,
               d.last_code, d.last_status, d.reason, d.sent_at, d.unsubscribed_at,
               d.complained_at, d.updated_at
        FROM deliveries d JOIN campaigns c ON c.uid = d.campaign_uid
        WHERE d.address_hash = $1
        ORDER BY d.id
        """,
        hashed,
    )
    suppression = await conn.fetchrow(
        "SELECT reason, source, created_at FROM suppressions WHERE address_hash = $1", hashed
    )
    mentions: list[dict[str, Any]] = []
    for where, query in _MENTIONS:
        for row in await conn.fetch(query, _like(needles), hashed):
            mentions.append({"table": where, "id": row["id"], "text": row["text"]})
    document: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "exported_at": datetime.now(UTC).isoformat(),
        "email": normalized,
        "address_hash": hashed.hex(),
        "contacts": [
            {
                "id": str(row["id"]),
                "email": row["email"],
                "fields": json.loads(row["fields"]),
                "list": {"id": str(row["list_id"]), "name": row["list_name"]},
                "created_at": _time(row["created_at"]),
                "updated_at": _time(row["updated_at"]),
            }
            for row in contacts
        ],
        "list_memberships": [
            {
                "list_id": str(row["list_id"]),
                "list_name": row["list_name"],
                "since": _time(row["created_at"]),
            }
            for row in sorted(contacts, key=lambda r: r["list_name"])
        ],
        "deliveries": [
            {
                "id": row["id"],
                "campaign": {
                    "uid": str(row["campaign_uid"]),
                    "namespace": row["namespace"],
                    "name": row["campaign"],
                },
                "state": row["state"],
                "attempts": row["attempts"],
                "last_code": row["last_code"],
                "last_status": row["last_status"],
                "reason": row["reason"],
                "sent_at": _time(row["sent_at"]),
                "unsubscribed_at": _time(row["unsubscribed_at"]),
                "complained_at": _time(row["complained_at"]),
                "updated_at": _time(row["updated_at"]),
            }
            for row in deliveries
        ],
        "suppression": {
            "suppressed": suppression is not None,
            "reason": suppression["reason"] if suppression else None,
            "source": suppression["source"] if suppression else None,
            "since": _time(suppression["created_at"]) if suppression else None,
        },
        "mentions": mentions,
    }
    await record(
        conn,
        context,
        "contact.export",
        target=_target(hashed),
        details={
            "contacts": len(contacts),
            "deliveries": len(deliveries),
            "mentions": len(mentions),
        },
    )
    return document


async def erase_contact(
    conn: AnyConnection, key: bytes, address: str, context: Context
) -> ErasureReport:
    """Erase `address` from the current tenant's data (see the module's table); its keyed
    hash stays on the suppression list. Idempotent: erasing again finds nothing more."""
    hashed, normalized = _hashed(key, address)
    async with conn.transaction():
        needles = await _needles(conn, hashed, address, normalized)
        pattern = re.compile("|".join(re.escape(n) for n in needles), re.IGNORECASE)
        suppression_added = bool(
            await conn.fetchval(
                "INSERT INTO suppressions (address_hash, reason, source) "
                "VALUES ($1, 'manual', 'gdpr-erasure') "
                "ON CONFLICT (tenant_id, address_hash) DO NOTHING RETURNING true",
                hashed,
            )
        )
        deleted = await conn.fetchval(
            "WITH gone AS (DELETE FROM contacts "
            "WHERE address_hash = $1 OR lower(email) = ANY($2::text[]) RETURNING 1) "
            "SELECT count(*) FROM gone",
            hashed,
            needles,
        )
        fields_scrubbed = 0
        likes = _like(needles)
        for row in await conn.fetch(
            "SELECT id, fields FROM contacts WHERE lower(fields::text) LIKE ANY($1::text[])", likes
        ):
            cleaned = json.dumps(_replace(json.loads(row["fields"]), pattern))
            await conn.execute(
                "UPDATE contacts SET fields = $2::jsonb WHERE id = $1", row["id"], cleaned
            )
            fields_scrubbed += 1
        # Its own rows: the whole reply goes (it may quote more than the address, e.g. a
        # name); other rows: the address within the text.
        regex = "|".join(re.escape(n) for n in needles)
        own = await conn.execute(
            "UPDATE deliveries SET reason = CASE WHEN reason IS NULL THEN NULL ELSE $2 END, "
            "last_status = CASE WHEN last_status ~ '^[0-9.]+$' THEN last_status "
            "                   WHEN last_status IS NULL THEN NULL ELSE $2 END "
            "WHERE address_hash = $1 AND (reason IS NOT NULL OR last_status IS NOT NULL)",
            hashed,
            ERASED,
        )
        others = await conn.execute(
            "UPDATE deliveries SET reason = regexp_replace(reason, $3, $4, 'gi'), "
            "last_status = regexp_replace(last_status, $3, $4, 'gi') "
            "WHERE address_hash <> $1 "
            "AND lower(concat_ws(' ', last_status, reason)) LIKE ANY($2::text[])",
            hashed,
            likes,
            regex,
            ERASED,
        )
        campaigns = await conn.execute(
            "UPDATE campaigns SET pause_reason = regexp_replace(pause_reason, $2, $3, 'gi') "
            "WHERE lower(pause_reason) LIKE ANY($1::text[])",
            likes,
            regex,
            ERASED,
        )
        audit_scrubbed = 0
        for needle in needles:
            audit_scrubbed += int(
                await conn.fetchval("SELECT scrub_audit_address($1)", needle) or 0
            )
        events = await conn.fetchval(
            "WITH gone AS (DELETE FROM webhook_events "
            "WHERE lower(payload::text) LIKE ANY($1::text[]) RETURNING 1) "
            "SELECT count(*) FROM gone",
            likes,
        )
        attempts = await conn.fetchval(
            "WITH gone AS (DELETE FROM webhook_attempts "
            "WHERE lower(concat_ws(' ', response, error)) LIKE ANY($1::text[]) RETURNING 1) "
            "SELECT count(*) FROM gone",
            likes,
        )
        report = ErasureReport(
            contacts_deleted=int(deleted),
            contact_fields_scrubbed=fields_scrubbed,
            deliveries_scrubbed=_count(own) + _count(others),
            campaigns_scrubbed=_count(campaigns),
            audit_entries_scrubbed=audit_scrubbed,
            webhook_events_deleted=int(events),
            webhook_attempts_deleted=int(attempts),
            suppression_added=suppression_added,
        )
        await record(conn, context, "contact.erase", target=_target(hashed), details=asdict(report))
    return report


def _count(status: str) -> int:
    return int(status.split()[-1])
