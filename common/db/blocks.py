"""Receivers' policy and reputation blocks (5.7.x), shared by every sender pod and the intake.

A block is about the server that carried the message (its IP is listed) or about the sending
domain (its reputation): never about the recipient, so nobody is suppressed for it. Senders
record the blocks in the relay's replies, the intake those in DSNs that arrive later (the
delivery's `relay` column, migration 0012, says which server carried it); every sender reads
the recent ones (`recent_strikes`) and skips a server or domain that took enough of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from penguinmails.common.db import AnyConnection

__all__ = [
    "BLOCK_PAUSE_SECONDS",
    "BLOCK_STRIKES",
    "BLOCK_WINDOW_SECONDS",
    "Block",
    "BlockScope",
    "Strikes",
    "active_block",
    "add_blocks",
    "delivery_route",
    "recent_strikes",
]

BLOCK_STRIKES = 3
BLOCK_WINDOW_SECONDS = 600.0
BLOCK_PAUSE_SECONDS = 900.0
"""A server (or sending domain) refused `BLOCK_STRIKES` messages for policy/reputation (5.7.x
but domain authentication, or a 5xx without enhanced code; for a domain, authentication
failures too) within the window, in the relay's replies or in DSNs at the intake: skipped
for the pause after the last of them (sender/engine.py), and shown in its status meanwhile
(operator/block_status.py)."""


class BlockScope(StrEnum):
    SERVER = "server"
    """`target` is an SmtpServer's name (its address is listed, its IP has poor reputation)."""
    DOMAIN = "domain"
    """`target` is a sending domain (the From domain of the blocked message)."""


@dataclass(frozen=True)
class Block:
    scope: BlockScope
    target: str
    source: str
    """`relay` (the relay's reply to this sender) or `dsn` (a report at the intake)."""
    delivery_id: int | None = None
    status: str | None = None


@dataclass(frozen=True)
class Strikes:
    """A server or domain blocked now: `BLOCK_STRIKES` blocks within the window, the last of
    them less than the pause ago."""

    scope: BlockScope
    target: str
    count: int
    """Blocks in the window that ended with the latest of them."""
    age: float
    """Seconds since that latest block: the block lasts until the pause after it."""
    status: str | None = None
    """The latest block's enhanced status code (5.7.1, 5.7.26...), when it had one."""
    at: datetime | None = None
    """When the latest block was recorded (the block lasts until the pause after it)."""


async def add_blocks(conn: AnyConnection, blocks: Sequence[Block]) -> None:
    """Record blocks (in the caller's tenant scope), dropping the tenant's older than a
    day (nothing reads them)."""
    if not blocks:
        return
    await conn.execute(
        """
        INSERT INTO sending_blocks (scope, target, source, delivery_id, status)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[])
        """,
        [b.scope.value for b in blocks],
        [b.target[:253] for b in blocks],
        [b.source for b in blocks],
        [b.delivery_id for b in blocks],
        [b.status[:16] if b.status else None for b in blocks],
    )
    # Tenants' logins may not DELETE (migration 0012): the owner's function does it.
    await conn.execute("SELECT prune_sending_blocks()")


_STRIKES = """
SELECT scope, target, n AS count, extract(epoch FROM now() - at)::float8 AS age, status, at
FROM (
    SELECT DISTINCT ON (scope, target) scope, target, at, n, status
    FROM (
        SELECT scope, target, at, status,
               count(*) OVER (PARTITION BY scope, target ORDER BY at
                              RANGE BETWEEN make_interval(secs => $1::float8) PRECEDING
                              AND CURRENT ROW) AS n
        FROM sending_blocks
        WHERE at > now() - make_interval(secs => $1::float8 + $3::float8)
          AND ($4::text IS NULL OR (scope = $4 AND target = $5))
    ) runs
    WHERE n >= $2::int
    ORDER BY scope, target, at DESC
) latest
WHERE at > now() - make_interval(secs => $3::float8)
"""


async def recent_strikes(
    conn: AnyConnection,
    window: float = BLOCK_WINDOW_SECONDS,
    strikes: int = BLOCK_STRIKES,
    pause: float = BLOCK_PAUSE_SECONDS,
) -> list[Strikes]:
    """Servers and domains blocked now: at least `strikes` blocks within `window` seconds,
    the last of them less than `pause` seconds ago. A sender that starts during a pause
    (or the operator showing it) finds the same block as the one that saw it happen."""
    return await _strikes(conn, window, strikes, pause, None, None)


async def active_block(conn: AnyConnection, scope: BlockScope, target: str) -> Strikes | None:
    """The block of one server or domain now (`recent_strikes`), or None."""
    found = await _strikes(
        conn, BLOCK_WINDOW_SECONDS, BLOCK_STRIKES, BLOCK_PAUSE_SECONDS, scope, target
    )
    return found[0] if found else None


async def _strikes(
    conn: AnyConnection,
    window: float,
    strikes: int,
    pause: float,
    scope: BlockScope | None,
    target: str | None,
) -> list[Strikes]:
    rows = await conn.fetch(
        _STRIKES,
        float(window),
        strikes,
        float(pause),
        scope.value if scope is not None else None,
        target,
    )
    return [
        Strikes(
            BlockScope(row["scope"]),
            row["target"],
            int(row["count"]),
            float(row["age"]),
            row["status"],
            row["at"],
        )
        for row in rows
    ]


async def delivery_route(conn: AnyConnection, delivery_id: int) -> tuple[str | None, str | None]:
    """The server that carried a delivery (its last attempt) and the mailbox it was from."""
    row = await conn.fetchrow("SELECT relay, mailbox FROM deliveries WHERE id = $1", delivery_id)
    if row is None:
        return None, None
    return row["relay"], row["mailbox"]
