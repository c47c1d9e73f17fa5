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
from enum import StrEnum

from penguinmails.common.db import AnyConnection

__all__ = ["Block", "BlockScope", "Strikes", "add_blocks", "delivery_route", "recent_strikes"]


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
    """A server or domain with at least the asked number of blocks in the window."""

    scope: BlockScope
    target: str
    count: int
    age: float
    """Seconds since its latest block."""


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


async def recent_strikes(conn: AnyConnection, window: float, strikes: int) -> list[Strikes]:
    """Servers and domains with at least `strikes` blocks in the last `window` seconds."""
    rows = await conn.fetch(
        """
        SELECT scope, target, count(*) AS count,
               extract(epoch FROM now() - max(at))::float8 AS age
        FROM sending_blocks WHERE at > now() - make_interval(secs => $1)
        GROUP BY scope, target HAVING count(*) >= $2
        """,
        float(window),
        strikes,
    )
    return [
        Strikes(BlockScope(row["scope"]), row["target"], int(row["count"]), float(row["age"]))
        for row in rows
    ]


async def delivery_route(conn: AnyConnection, delivery_id: int) -> tuple[str | None, str | None]:
    """The server that carried a delivery (its last attempt) and the mailbox it was from."""
    row = await conn.fetchrow("SELECT relay, mailbox FROM deliveries WHERE id = $1", delivery_id)
    if row is None:
        return None, None
    return row["relay"], row["mailbox"]
