"""What the delivery ledger says in aggregate: a tenant's deliveries per day (the dashboard's
overview charts) and the deliveries waiting per tenant and per server (the administrators'
queues page).

Both read the ledger under a tenant's scope (`tenant_connection()`), so row-level security
keeps each figure to one tenant. Days are UTC calendar days, as usage is (operator/usage.py).
A day's figures (`DAILY_SQL`):

* `sent`: messages the relay accepted that day (`sent_at`), bounced later or not: what usage
  counts;
* `delivered`: of those, the ones that stayed delivered (no bounce since);
* `bounced`: deliveries that bounced that day (at the relay or by a later DSN), by the time of
  the bounce, as the stop rules count them (`ledger.window_counts`);
* `complaints`: complaints received that day (`complained_at`);
* `replies`: deliveries first replied to that day (`replied_at`, migration 0015: the intake
  records a contact's first reply to a message, auto-replies excluded; sender/replies.py).

Days with nothing are zeros: the series always has one row per day of the range.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime

import asyncpg

from penguinmails.common.db import tenant_connection, tenant_scope

__all__ = [
    "DailyCounts",
    "ServerQueue",
    "TenantQueue",
    "daily_counts",
    "waiting_deliveries",
]


@dataclass(frozen=True)
class DailyCounts:
    day: date
    sent: int
    delivered: int
    bounced: int
    complaints: int
    replies: int


# $1, $2: the first and last day (inclusive). Each aggregate reads only its range, the sent
# one on the (tenant_id, sent_at) index of migration 0007.
DAILY_SQL = """
WITH bounds AS (
    SELECT ($1::date)::timestamp AT TIME ZONE 'UTC' AS since,
           ($2::date + 1)::timestamp AT TIME ZONE 'UTC' AS until
), sent AS (
    SELECT (d.sent_at AT TIME ZONE 'UTC')::date AS day, count(*) AS sent,
           count(*) FILTER (WHERE d.state = 'sent') AS delivered
      FROM deliveries d, bounds b
     WHERE d.sent_at >= b.since AND d.sent_at < b.until
     GROUP BY 1
), bounced AS (
    SELECT (d.updated_at AT TIME ZONE 'UTC')::date AS day, count(*) AS bounced
      FROM deliveries d, bounds b
     WHERE d.state = 'bounced' AND d.updated_at >= b.since AND d.updated_at < b.until
     GROUP BY 1
), complained AS (
    SELECT (d.complained_at AT TIME ZONE 'UTC')::date AS day, count(*) AS complaints
      FROM deliveries d, bounds b
     WHERE d.complained_at >= b.since AND d.complained_at < b.until
     GROUP BY 1
), replied AS (
    SELECT (d.replied_at AT TIME ZONE 'UTC')::date AS day, count(*) AS replies
      FROM deliveries d, bounds b
     WHERE d.replied_at >= b.since AND d.replied_at < b.until
     GROUP BY 1
)
SELECT days.day::date AS day,
       COALESCE(s.sent, 0) AS sent, COALESCE(s.delivered, 0) AS delivered,
       COALESCE(x.bounced, 0) AS bounced, COALESCE(c.complaints, 0) AS complaints,
       COALESCE(r.replies, 0) AS replies
  FROM generate_series($1::date, $2::date, interval '1 day') AS days (day)
  LEFT JOIN sent s ON s.day = days.day::date
  LEFT JOIN bounced x ON x.day = days.day::date
  LEFT JOIN complained c ON c.day = days.day::date
  LEFT JOIN replied r ON r.day = days.day::date
 ORDER BY days.day
"""


async def daily_counts(
    pool: asyncpg.Pool, tenant_id: uuid.UUID, since: date, until: date
) -> list[DailyCounts]:
    """One row per UTC day from `since` to `until` (inclusive), under the tenant's scope."""
    async with tenant_connection(pool, tenant_id) as conn:
        rows = await conn.fetch(DAILY_SQL, since, until)
    return [
        DailyCounts(
            day=r["day"],
            sent=int(r["sent"]),
            delivered=int(r["delivered"]),
            bounced=int(r["bounced"]),
            complaints=int(r["complaints"]),
            replies=int(r["replies"]),
        )
        for r in rows
    ]


@dataclass(frozen=True)
class ServerQueue:
    server: str | None
    """The SmtpServer a deferred delivery was last handed to (`deliveries.relay`); None for
    deliveries no server has had yet (the sender picks one when it claims them)."""
    queued: int
    deferred: int
    sending: int
    next_due: datetime | None


@dataclass(frozen=True)
class TenantQueue:
    tenant: str
    queued: int
    deferred: int
    sending: int
    next_due: datetime | None
    servers: list[ServerQueue]


# Waiting = not yet final: queued, deferred (retry later) or sending (claimed by a sender).
# On the partial index deliveries_due (tenant_id, next_attempt_at) of migration 0002.
_WAITING_SQL = """
SELECT relay,
       count(*) FILTER (WHERE state = 'queued') AS queued,
       count(*) FILTER (WHERE state = 'deferred') AS deferred,
       count(*) FILTER (WHERE state = 'sending') AS sending,
       min(next_attempt_at) FILTER (WHERE state <> 'sending') AS next_due
  FROM deliveries
 WHERE state IN ('queued', 'deferred', 'sending')
 GROUP BY relay
 ORDER BY relay NULLS FIRST
"""


async def waiting_deliveries(pool: asyncpg.Pool) -> list[TenantQueue]:
    """The deliveries waiting in every live tenant's ledger, per tenant and per server: one
    tenant scope after another on one connection (a platform login: a member of
    penguinmails_platform, as the API's is), so no query ever sees two tenants' rows."""
    result: list[TenantQueue] = []
    async with pool.acquire() as conn:
        tenants = await conn.fetch(
            "SELECT id, name FROM tenants WHERE deleted_at IS NULL ORDER BY name"
        )
        for tenant in tenants:
            async with tenant_scope(conn, tenant["id"]):
                rows = await conn.fetch(_WAITING_SQL)
            servers = [
                ServerQueue(
                    server=r["relay"],
                    queued=int(r["queued"]),
                    deferred=int(r["deferred"]),
                    sending=int(r["sending"]),
                    next_due=r["next_due"],
                )
                for r in rows
            ]
            dues = [s.next_due for s in servers if s.next_due is not None]
            result.append(
                TenantQueue(
                    tenant=tenant["name"],
                    queued=sum(s.queued for s in servers),
                    deferred=sum(s.deferred for s in servers),
                    sending=sum(s.sending for s in servers),
                    next_due=min(dues) if dues else None,
                    servers=servers,
                )
            )
    return result
