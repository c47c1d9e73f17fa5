"""Receivers' policy and reputation blocks (5.7.x), shared by every sender pod and the intake.

A block is about the server that carried the message (its IP is listed) or about the sending
domain (its reputation): never about the recipient, so nobody is suppressed for it. Senders
record the blocks in the relay's replies, the intake those in DSNs that arrive later (the
delivery's `relay` column, migration 0012, says which server carried it); every sender reads
the recent ones (`recent_strikes`) and skips a server or domain that took enough of them.

A shared-pool server (platform namespace) carries several tenants' mail from one IP, so its
blocks count across tenants (migration 0014): `add_blocks` also records a server strike about
a registered pool server (`register_pool_server`, by the platform) in a platform-owned table
no tenant login reads; senders learn only which pool servers are blocked and until when
(`pool_blocks`); the operator shows a pool server's block (`pool_server_block`). One tenant's
DSNs count as one strike against a pool server however many it sends (a customer can forge
DSNs for its own messages), so DSNs block one for everyone only when `BLOCK_STRIKES` tenants
report it; the relay's own replies count one each, from any tenant.
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
    "PoolBlock",
    "Strikes",
    "active_block",
    "add_blocks",
    "delivery_route",
    "forget_pool_server",
    "pool_blocks",
    "pool_server_block",
    "pool_server_name",
    "recent_strikes",
    "register_pool_server",
]


def pool_server_name(namespace: str, name: str) -> str:
    """A shared-pool server's name in campaign plans, the ledger (`deliveries.relay`) and
    blocks: qualified by its namespace. A tenant's own SmtpServer is known by its bare name,
    and Kubernetes names have no '/', so a tenant cannot name its own server (a relay it
    controls, refusing with 5.7.1) like a pool server and have its strikes block the pool."""
    return f"{namespace}/{name}"


BLOCK_STRIKES = 3
BLOCK_WINDOW_SECONDS = 600.0
BLOCK_PAUSE_SECONDS = 900.0
"""A server (or sending domain) refused `BLOCK_STRIKES` messages for policy/reputation (5.7.x
but domain authentication, or a 5xx without enhanced code; for a domain, authentication
failures too) within the window, in the relay's replies or in DSNs at the intake: skipped
for the pause after the last of them (sender/engine.py), and shown in its status meanwhile
(operator/receiver_block.py)."""


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


@dataclass(frozen=True)
class PoolBlock:
    """A shared-pool server blocked for every tenant on it, as a sender may know it."""

    server: str
    until: datetime
    seconds_left: float


async def add_blocks(conn: AnyConnection, blocks: Sequence[Block]) -> None:
    """Record blocks (in the caller's tenant scope), dropping the tenant's older than a
    day (nothing reads them). Server blocks about a shared-pool server also count for every
    tenant on it (`record_pool_strikes` checks that the server is one, and that the delivery
    is the caller's and was carried by it; other servers are left out there)."""
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
    for source in sorted({b.source for b in blocks}):
        servers = [
            b
            for b in blocks
            if b.scope == BlockScope.SERVER and b.delivery_id is not None and b.source == source
        ]
        if servers:
            await conn.execute(
                "SELECT record_pool_strikes($1::text[], $2::bigint[], $3::text[], $4)",
                [b.target[:253] for b in servers],
                [b.delivery_id for b in servers],
                [b.status for b in servers],
                source,
            )


async def pool_blocks(
    conn: AnyConnection,
    window: float = BLOCK_WINDOW_SECONDS,
    strikes: int = BLOCK_STRIKES,
    pause: float = BLOCK_PAUSE_SECONDS,
) -> list[PoolBlock]:
    """Shared-pool servers blocked now for every tenant (any login, in its tenant scope):
    names and until-times only, nothing of whose strikes they were."""
    rows = await conn.fetch(
        "SELECT server, until, extract(epoch FROM until - now())::float8 AS left_"
        " FROM pool_server_blocks($1::float8, $2::int, $3::float8)",
        float(window),
        strikes,
        float(pause),
    )
    return [PoolBlock(row["server"], row["until"], float(row["left_"])) for row in rows]


async def pool_server_block(conn: AnyConnection, server: str) -> Strikes | None:
    """The block of one shared-pool server now, for its status (the platform's login, outside
    any tenant scope: the SmtpServer controller in the platform namespace): counted strikes
    (from every tenant), the latest's status and time; None when not blocked."""
    row = await conn.fetchrow(
        "SELECT counted, last_status, last_at, extract(epoch FROM now() - last_at)::float8 AS age"
        " FROM pool_server_block_details($1::float8, $2::int, $3::float8) WHERE server = $4",
        BLOCK_WINDOW_SECONDS,
        BLOCK_STRIKES,
        BLOCK_PAUSE_SECONDS,
        server,
    )
    if row is None:
        return None
    return Strikes(
        BlockScope.SERVER,
        server,
        int(row["counted"]),
        float(row["age"]),
        row["last_status"],
        row["last_at"],
    )


async def register_pool_server(conn: AnyConnection, server: str) -> None:
    """Record an SmtpServer of the platform namespace labelled `penguinmails.io/pool=shared`
    as a shared-pool server (the platform's login): its blocks then count for every tenant."""
    await conn.execute(
        "INSERT INTO pool_servers (name) VALUES ($1) ON CONFLICT (name) DO NOTHING", server
    )


async def forget_pool_server(conn: AnyConnection, server: str) -> None:
    """A pool server deleted or no longer labelled: its strikes go with it."""
    await conn.execute("DELETE FROM pool_servers WHERE name = $1", server)


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
