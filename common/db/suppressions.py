"""The suppression list as the customer API shows and changes it: pages, one entry, removal,
and adding many addresses at once. Adding one and checking one are
`penguinmails.common.suppression.suppress` / `is_suppressed`, which the sender and the intake
use: the rows are the same, keyed by the same hash (`address_hash`), so what the API adds is
what the enqueue and claim queries of the sender path skip (`common/db/ledger.py`).

Only keyed hashes are stored, never addresses: a page shows hashes, reasons, sources and dates.
Every function runs inside the caller's tenant scope (`tenant_connection()`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from penguinmails.common.db import AnyConnection
from penguinmails.common.suppression import SuppressionReason

__all__ = ["Suppression", "get_suppression", "list_suppressions", "suppress_many", "unsuppress"]


@dataclass(frozen=True)
class Suppression:
    address_hash: bytes
    reason: str
    source: str | None
    created_at: datetime


_SELECT = "SELECT address_hash, reason, source, created_at FROM suppressions "


def _row(row: asyncpg.Record) -> Suppression:
    return Suppression(bytes(row["address_hash"]), row["reason"], row["source"], row["created_at"])


async def list_suppressions(
    conn: AnyConnection,
    *,
    after: tuple[datetime, bytes] | None,
    limit: int,
    reason: str | None = None,
) -> list[Suppression]:
    """Up to `limit` entries after the position `after`, oldest first."""
    rows = await conn.fetch(
        _SELECT + "WHERE ($1::timestamptz IS NULL OR (created_at, address_hash) > ($1, $2)) "
        "AND ($3::text IS NULL OR reason = $3) ORDER BY created_at, address_hash LIMIT $4",
        after[0] if after else None,
        after[1] if after else None,
        reason,
        limit,
    )
    return [_row(r) for r in rows]


async def get_suppression(conn: AnyConnection, hashed: bytes) -> Suppression | None:
    row = await conn.fetchrow(_SELECT + "WHERE address_hash = $1", hashed)
    return _row(row) if row is not None else None


async def unsuppress(conn: AnyConnection, hashed: bytes) -> bool:
    """Remove the entry; False when there was none."""
    status = await conn.execute("DELETE FROM suppressions WHERE address_hash = $1", hashed)
    return status.endswith(" 1")


async def suppress_many(
    conn: AnyConnection, hashes: Sequence[bytes], reason: SuppressionReason, source: str
) -> int:
    """Add every hash in one statement, with the same rule as `suppress` for repeats (a
    complaint or hard bounce overrides unsubscribed or manual); the number newly added."""
    added = await conn.fetchval(
        """
        WITH written AS (
            INSERT INTO suppressions (address_hash, reason, source)
            SELECT DISTINCT h, $2, $3 FROM unnest($1::bytea[]) AS h
            ON CONFLICT (tenant_id, address_hash) DO UPDATE SET reason = EXCLUDED.reason
            WHERE suppressions.reason IN ('unsubscribed', 'manual')
              AND EXCLUDED.reason IN ('complaint', 'hard_bounce')
            RETURNING xmax = 0 AS inserted
        )
        SELECT count(*) FILTER (WHERE inserted) FROM written
        """,
        list(hashes),
        reason.value,
        source,
    )
    return int(added or 0)
