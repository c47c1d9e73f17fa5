"""Delivering webhook events: the dispatcher, its retry schedule, and its process.

    python -m penguinmails.common.webhook_dispatch      # PM_DATABASE_URL, PM_EGRESS_ALLOW...

`Dispatcher` claims due deliveries (`common.webhooks` stores them) with a lease, so any number
of dispatchers may run and none posts an attempt another holds; posts them outside any
transaction, to the address the egress check passed; and records each attempt in
`webhook_attempts`: status code, latency, the first `RESPONSE_LIMIT` characters of the response
or the connection error. A 2xx is success; anything else is retried after
`RetrySchedule.after(attempt)`, then the delivery is `failed`. Redirects are not followed: each
destination must pass the egress check. See docs/data-protection.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx

from penguinmails.common.db import AnyConnection, tenant_connection
from penguinmails.common.egress import DestinationNotAllowedError, EgressPolicy
from penguinmails.common.webhooks import CHANNEL, check_destination, signed_headers

__all__ = [
    "DEFAULT_RETRY_SCHEDULE",
    "HISTORY_RETENTION",
    "RESCAN_SECONDS",
    "RESPONSE_LIMIT",
    "Dispatcher",
    "RetrySchedule",
    "main",
    "serve",
]

log = logging.getLogger(__name__)

RESPONSE_LIMIT = 2048
"""Characters of a response body kept in the delivery log."""
RESCAN_SECONDS = 60.0
"""How often the dispatcher process passes over every live tenant whatever it was told
(PM_WEBHOOK_RESCAN_SECONDS): the safety net under notifications."""
HISTORY_RETENTION = timedelta(days=30)
"""Finished events (payloads name recipients) and their delivery log are deleted after this."""


@dataclass(frozen=True)
class RetrySchedule:
    """How long to wait after each failed attempt: `delays[n - 1]` after attempt n; once they
    are used up the delivery has failed. So `len(delays) + 1` attempts in all."""

    delays: tuple[timedelta, ...]

    @classmethod
    def exponential(
        cls, first: timedelta, factor: float, retries: int, cap: timedelta
    ) -> RetrySchedule:
        return cls(tuple(min(first * factor**n, cap) for n in range(retries)))

    def after(self, attempt: int) -> timedelta | None:
        """The wait after failed attempt `attempt` (1-based); None when none is left."""
        return self.delays[attempt - 1] if 1 <= attempt <= len(self.delays) else None


DEFAULT_RETRY_SCHEDULE = RetrySchedule.exponential(
    first=timedelta(seconds=5), factor=5, retries=8, cap=timedelta(hours=10)
)
"""5 s, 25 s, ~2 min, ~10 min, ~52 min, ~4.3 h, 10 h, 10 h: nine attempts over about a day,
long enough to ride out a receiver's outage overnight (Stripe retries for three days, Svix for
about 28 hours)."""


def _pinned(url: str, address: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The request for `url` sent to the checked `address`: the URL with the address as its
    host, the Host header and (for https) the TLS server name, and so the certificate check,
    still the endpoint's own name. Resolving once more at connection time would let a name
    that answers a public address to the check and a private one to the connection (DNS
    rebinding) reach what the check refused."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    literal = f"[{address}]" if ":" in address else address
    netloc = literal if parts.port is None else f"{literal}:{parts.port}"
    pinned = parts._replace(netloc=netloc).geturl()
    shown = f"[{host}]" if ":" in host else host
    headers = {"host": shown if parts.port is None else f"{shown}:{parts.port}"}
    extensions: dict[str, Any] = {"sni_hostname": host} if parts.scheme == "https" else {}
    return pinned, headers, extensions


@dataclass(frozen=True)
class _Claimed:
    id: int
    event_id: str
    attempt: int
    manual: bool
    url: str
    secret: str
    previous_secret: str | None
    body: bytes


@dataclass(frozen=True)
class _Result:
    status_code: int | None
    latency_ms: int
    response: str | None
    error: str | None
    permanent: bool = False

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


_CLAIM = """
WITH due AS (
    SELECT d.id FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
    WHERE d.state = 'pending' AND e.enabled AND d.next_attempt_at <= now()
      AND (d.lease_until IS NULL OR d.lease_until < now())
    ORDER BY d.next_attempt_at, d.id
    LIMIT $1
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE webhook_deliveries d
SET attempts = d.attempts + 1, lease_until = now() + $2::interval, updated_at = now()
FROM due, webhook_endpoints e, webhook_events ev
WHERE d.id = due.id AND e.id = d.endpoint_id AND ev.id = d.event_id
RETURNING d.id, d.event_id, d.attempts, d.manual, e.url, e.secret,
    CASE WHEN e.previous_until > now() THEN e.previous_secret END AS previous_secret,
    ev.payload::text AS body
"""


class Dispatcher:
    """Posts due deliveries: `run_forever()` in the dispatcher process, or `run_once()` /
    `deliver_due()` for one pass. Any number may run: claims are leased, and a row another
    holds is skipped."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        schedule: RetrySchedule = DEFAULT_RETRY_SCHEDULE,
        policy: EgressPolicy | None = None,
        client: httpx.AsyncClient | None = None,
        timeout: float = 15.0,
        batch: int = 50,
        concurrency: int = 10,
        retention: timedelta = HISTORY_RETENTION,
        purge_every: timedelta = timedelta(hours=1),
    ) -> None:
        self.pool = pool
        self.schedule = schedule
        self.policy = policy if policy is not None else EgressPolicy.from_env()
        self.client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout), follow_redirects=False
        )
        self.timeout = timeout
        # A claim outlives the slowest attempt, so a live dispatcher's work is never re-claimed.
        self.lease = timedelta(seconds=timeout * 2 + 30)
        self.batch = batch
        self.limit = asyncio.Semaphore(concurrency)
        self.retention = retention
        self.purge_every = purge_every
        self._next_purge = 0.0

    async def aclose(self) -> None:
        await self.client.aclose()

    async def run_once(self) -> int:
        """One pass over every live, unsuspended tenant; returns the attempts made. At most
        once every `purge_every`, finished history older than `retention` is deleted too."""
        tenants = await self.pool.fetch(
            "SELECT id FROM tenants WHERE deleted_at IS NULL AND NOT suspended ORDER BY id"
        )
        purge = time.monotonic() >= self._next_purge
        if purge:
            self._next_purge = time.monotonic() + self.purge_every.total_seconds()
        made = 0
        for row in tenants:
            made += await self.deliver_due(row["id"])
            if purge:
                await self.purge_history(row["id"])
        return made

    async def purge_history(self, tenant_id: uuid.UUID) -> int:
        """Delete the tenant's events older than `retention` whose deliveries are all finished
        (with their deliveries and attempts); returns how many events went."""
        async with tenant_connection(self.pool, tenant_id) as conn:
            gone = await conn.fetchval(
                """
                WITH gone AS (
                    DELETE FROM webhook_events ev
                    WHERE ev.created_at < now() - $1::interval
                      AND NOT EXISTS (SELECT FROM webhook_deliveries d
                                      WHERE d.event_id = ev.id AND d.state = 'pending')
                    RETURNING 1
                ) SELECT count(*) FROM gone
                """,
                self.retention,
            )
        return int(gone)

    async def deliver_due(self, tenant_id: uuid.UUID) -> int:
        """Claim and post up to `batch` due deliveries of one tenant; returns how many."""
        async with tenant_connection(self.pool, tenant_id) as conn:
            rows = await conn.fetch(_CLAIM, self.batch, self.lease)
        claimed = [
            _Claimed(
                id=row["id"],
                event_id=row["event_id"],
                attempt=row["attempts"],
                manual=row["manual"],
                url=row["url"],
                secret=row["secret"],
                previous_secret=row["previous_secret"],
                body=str(row["body"]).encode("utf-8"),
            )
            for row in rows
        ]
        results = await asyncio.gather(*(self._post(item) for item in claimed))
        if claimed:
            async with tenant_connection(self.pool, tenant_id) as conn:
                for item, result in zip(claimed, results, strict=True):
                    await self._record(conn, item, result)
        return len(claimed)

    async def _post(self, item: _Claimed) -> _Result:
        async with self.limit:
            try:
                addresses = await check_destination(self.policy, item.url)
            except DestinationNotAllowedError as error:
                return _Result(None, 0, None, error.message[:500], permanent=True)
            if not addresses:
                host = urlsplit(item.url).hostname
                return _Result(None, 0, None, f"url: {host} does not resolve"[:500])
            url, host_header, extensions = _pinned(item.url, addresses[0])
            timestamp = int(time.time())
            headers = signed_headers(
                item.secret, item.event_id, timestamp, item.body, previous=item.previous_secret
            )
            started = time.monotonic()
            try:
                async with self.client.stream(
                    "POST",
                    url,
                    content=item.body,
                    headers={**headers, **host_header},
                    extensions=extensions,
                ) as response:
                    kept = bytearray()
                    async for chunk in response.aiter_bytes():
                        kept += chunk
                        if len(kept) >= RESPONSE_LIMIT:
                            break
                    status = response.status_code
            except httpx.HTTPError as error:
                latency = int((time.monotonic() - started) * 1000)
                # The exception's class and text name the host at most, never the secret.
                return _Result(None, latency, None, f"{type(error).__name__}: {error}"[:500])
            latency = int((time.monotonic() - started) * 1000)
            text = kept.decode("utf-8", errors="replace")[:RESPONSE_LIMIT] if kept else None
            return _Result(status, latency, text, None)

    async def _record(self, conn: AnyConnection, item: _Claimed, result: _Result) -> None:
        if result.succeeded:
            state, delay = "succeeded", None
        elif result.permanent or item.manual:
            state, delay = "failed", None
        else:
            delay = self.schedule.after(item.attempt)
            state = "pending" if delay is not None else "failed"
        await conn.execute(
            "INSERT INTO webhook_attempts "
            "(delivery_id, attempt, status_code, latency_ms, response, error) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            item.id,
            item.attempt,
            result.status_code,
            result.latency_ms,
            result.response,
            result.error,
        )
        await conn.execute(
            """
            UPDATE webhook_deliveries
            SET state = $2, manual = false, lease_until = NULL, updated_at = now(),
                next_attempt_at = CASE WHEN $3::interval IS NULL THEN next_attempt_at
                                       ELSE now() + $3::interval END
            WHERE id = $1
            """,
            item.id,
            state,
            delay,
        )
        if state == "failed":
            log.info("webhook delivery %s failed after attempt %s", item.id, item.attempt)

    async def next_due_in(self, tenant_id: uuid.UUID) -> float | None:
        """Seconds until the tenant's next pending delivery may be claimed (a leased one: when
        its lease ends); None when nothing is pending."""
        async with tenant_connection(self.pool, tenant_id) as conn:
            wait = await conn.fetchval(
                "SELECT extract(epoch FROM min(greatest(d.next_attempt_at, "
                "coalesce(d.lease_until, d.next_attempt_at))) - now()) "
                "FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id "
                "WHERE d.state = 'pending' AND e.enabled"
            )
        return float(wait) if wait is not None else None

    async def run_forever(self, stop: asyncio.Event, rescan: float = RESCAN_SECONDS) -> None:
        """Until `stop` is set. A tenant is dispatched when `emit()` or `redeliver()` notify
        it (LISTEN on `CHANNEL`: at once, and no query for tenants with nothing to send),
        when its next retry falls due (remembered after each of its passes), and by a pass
        over every live tenant every `rescan` seconds, which also catches what was missed
        while not listening (and purges old history, at most hourly)."""
        while not stop.is_set():
            try:
                await self._listen_and_dispatch(stop, rescan)
            except (OSError, asyncpg.PostgresError) as error:
                log.warning("webhook dispatcher lost the database, retrying: %s", error)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)

    async def _listen_and_dispatch(self, stop: asyncio.Event, rescan: float) -> None:
        due: dict[uuid.UUID, float] = {}
        wake = asyncio.Event()

        def notified(_conn: object, _pid: int, _channel: str, payload: object) -> None:
            with contextlib.suppress(ValueError):
                due[uuid.UUID(str(payload))] = 0.0
                wake.set()

        next_rescan = 0.0
        async with self.pool.acquire() as listener:
            await listener.add_listener(CHANNEL, notified)
            try:
                while not stop.is_set():
                    if listener.is_closed():
                        raise OSError("the LISTEN connection closed")
                    wake.clear()
                    if time.monotonic() >= next_rescan:
                        next_rescan = time.monotonic() + rescan
                        purge = time.monotonic() >= self._next_purge
                        if purge:
                            self._next_purge = time.monotonic() + self.purge_every.total_seconds()
                        for row in await self.pool.fetch(
                            "SELECT id FROM tenants WHERE deleted_at IS NULL AND NOT suspended"
                        ):
                            due[row["id"]] = 0.0
                            if purge:
                                await self.purge_history(row["id"])
                    for tenant in [t for t, at in due.items() if at <= time.monotonic()]:
                        del due[tenant]
                        made = await self.deliver_due(tenant)
                        while made >= self.batch:
                            made = await self.deliver_due(tenant)
                        wait = await self.next_due_in(tenant)
                        if wait is not None:
                            # Due yet not claimed (another dispatcher holds its row): look
                            # again in a second rather than spin.
                            wait = max(wait, 0.0 if made else 1.0)
                            due[tenant] = min(due.get(tenant, math.inf), time.monotonic() + wait)
                    until = min([next_rescan, *due.values()])
                    await _first_of(stop, wake, max(0.0, until - time.monotonic()))
            finally:
                if not listener.is_closed():
                    await listener.remove_listener(CHANNEL, notified)


async def _first_of(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    """Wait until either event is set or `seconds` have passed."""
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def serve(database_url: str, rescan: float = RESCAN_SECONDS) -> None:
    """The dispatcher as a process: until SIGTERM or SIGINT, then it finishes the pass it is
    in (a pass cut short only leaves leases that expire and are claimed again)."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    dispatcher = Dispatcher(pool)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("webhook dispatcher started (full pass every %.0f s)", rescan)
    try:
        await dispatcher.run_forever(stop, rescan)
    finally:
        await dispatcher.aclose()
        await pool.close()
    log.info("webhook dispatcher stopped")


def main() -> int:
    """`python -m penguinmails.common.webhook_dispatch`: PM_DATABASE_URL (a platform login,
    member of penguinmails_app and penguinmails_platform), PM_WEBHOOK_RESCAN_SECONDS,
    PM_EGRESS_ALLOW and PM_CLUSTER_CIDRS as everywhere else."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    database_url = os.environ.get("PM_DATABASE_URL", "")
    if not database_url:
        log.error("PM_DATABASE_URL is not set: point it at the platform's PostgreSQL login")
        return 1
    raw = os.environ.get("PM_WEBHOOK_RESCAN_SECONDS") or str(RESCAN_SECONDS)
    try:
        rescan = float(raw)
    except ValueError:
        log.error("PM_WEBHOOK_RESCAN_SECONDS=%r is not a number of seconds, e.g. 60", raw)
        return 1
    asyncio.run(serve(database_url, rescan))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
