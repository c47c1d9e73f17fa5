"""The sender's loop: claim deliveries, render, sign, throttle, relay, record outcomes.

    sender = Sender(pool, config, secrets=DirSecrets(...), redis=redis)
    await sender.run(stop_event)     # returns after `stop_event` once in-flight work is done

One claimer task takes due deliveries from the ledger (with a lease) as long as fewer than
`concurrency` are in flight; each delivery runs as its own task; outcomes go to a queue that a
recorder writes in batches (`record_batch` rows or every `record_interval` seconds). On stop,
nothing new is claimed, the in-flight deliveries finish and the last batch is written. A crash
instead leaves the claimed rows to expire and be claimed again (see common.db.ledger).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import math
import random
import ssl
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import asyncpg
import dns.asyncresolver
from kubernetes.client.exceptions import ApiException
from prometheus_client import Counter, Gauge, Histogram
from redis.asyncio import Redis
from redis.exceptions import RedisError
from urllib3.exceptions import HTTPError as TransportError

from penguinmails.common.db import tenant_connection
from penguinmails.common.db.blocks import (
    BLOCK_PAUSE_SECONDS,
    BLOCK_STRIKES,
    BLOCK_WINDOW_SECONDS,
    Block,
    BlockScope,
    pool_blocks,
    recent_strikes,
)
from penguinmails.common.db.ledger import (
    CAMPAIGN_FAULT,
    THROTTLED,
    CampaignPlan,
    Claimed,
    DeliveryState,
    Outcome,
    PlanMailbox,
    Relay,
    claim,
    enforce_stop_rules,
    get_campaign_plan,
    pause_campaign,
    record,
)
from penguinmails.common.dkim.signer import DkimSigner
from penguinmails.common.egress import EgressPolicy
from penguinmails.common.keys import TokenKey
from penguinmails.common.suppression import TokenPurpose, make_token
from penguinmails.common.tenant_redis import tenant_key_prefix
from penguinmails.common.throttle import Limit, TokenBuckets, provider_group
from penguinmails.sender.bounces import Kind, block_scope, classify
from penguinmails.sender.render import (
    Identity,
    MessageParts,
    Renderer,
    RenderError,
    return_path,
)
from penguinmails.sender.retry import RetrySchedule
from penguinmails.sender.secrets import SecretReader, load_signer
from penguinmails.sender.signing import Signing
from penguinmails.sender.smtp import RelayPool, SendResult

__all__ = [
    "BLOCK_PAUSE_SECONDS",
    "BLOCK_STRIKES",
    "BLOCK_WINDOW_SECONDS",
    "Sender",
    "SenderConfig",
]

log = logging.getLogger(__name__)

TRANSIENT: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    RedisError,
    ApiException,
    # The Kubernetes client's transport (urllib3): a refused or reset connection to the API
    # server surfaces as MaxRetryError/ProtocolError, neither of them an OSError.
    TransportError,
    OSError,
    TimeoutError,
)
"""Infrastructure hiccups: retried after a backoff, never an attempt, never a crash."""

MESSAGES = Counter(
    "penguinmails_messages_total", "Deliveries finished by this sender, by outcome.", ["outcome"]
)
IN_FLIGHT = Gauge("penguinmails_sender_in_flight", "Deliveries claimed and not yet recorded.")
MAILBOX_MESSAGES = Counter(
    "penguinmails_mailbox_messages_total",
    "Deliveries finished by this sender, by the mailbox (From address) they went out from "
    "and outcome (throttled waits are outcome queued).",
    ["mailbox", "outcome"],
)
_MESSAGES_BY_STATE = {state: MESSAGES.labels(outcome=state.value) for state in DeliveryState}
"""The counter of each outcome, looked up once (a labels() call per message showed in profiles)."""
SEND_SECONDS = Histogram(
    "penguinmails_smtp_send_seconds",
    "Time to hand one message to the relay.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30),
)


@dataclass(frozen=True)
class SenderConfig:
    tenant_id: uuid.UUID
    token_key: TokenKey
    """PM_TOKEN_KEY: the tenant's own key for unsubscribe and bounce tokens (common.keys)."""
    owner: str = field(default_factory=lambda: f"sender-{uuid.uuid4().hex[:12]}")
    concurrency: int = 32
    claim_batch: int = 64
    lease: timedelta = timedelta(minutes=2)
    """How long a claimed row is this sender's: an attempt may take at most half of it (the
    rest is for recording), so no send outlives its lease."""
    record_batch: int = 100
    record_interval: float = 0.2
    poll_interval: float = 0.5
    retry: RetrySchedule = field(default_factory=RetrySchedule)
    uncertain_retry: float = 3600.0
    """Seconds before a message whose result after DATA is unknown is sent again (with the
    same Message-ID): long enough for a relay that did accept it to have delivered it, so a
    receiver that de-duplicates on Message-ID sees one."""
    max_expired_claims: int = 5
    """A row claimed this many times after a sender lost it without an outcome (it crashes
    or stalls senders) ends failed instead of being claimed forever."""
    transient_backoff: float = 30.0
    """Seconds (jittered) before retrying what a database, Redis or API hiccup interrupted."""
    connections_per_relay: int = 16
    helo: str | None = None
    provider_rate: float = 100.0
    """Messages per second to one destination provider, across all senders (KumoMTA's
    shipped default per destination is 100/s)."""
    campaign_uid: uuid.UUID | None = None
    """Only this campaign (benchmarks); None: every sending campaign of the tenant."""
    signing_processes: int = 0
    """Worker processes making the DKIM signatures beside the event loop (`sender.signing`);
    0: on the loop. The program's default is one per CPU it may use beyond the loop's."""


RELAY_DOWN_SECONDS = 30.0
"""How long a relay that could not be reached is skipped when the campaign has another."""

BLOCK_REFRESH_SECONDS = 5.0
"""How often a sender reads the blocks every pod and the intake recorded (common.db.blocks)."""

CLAIM_GATHER_SECONDS = 0.025
"""How long the claim loop may gather freed slots into one claim: the most a due row (a
promised token) waits for its batch."""

WINDOW_REFRESH_SECONDS = 2.0
"""How often a sender re-reads a campaign's stop-rule window (bounces and complaints that
came through the intake) while it sends."""

_CAMPAIGN_TTL = 60.0
"""Seconds a loaded campaign (plan, compiled templates, DKIM keys) is used before a reload."""


def _campaign_limits(uid: uuid.UUID, plan: CampaignPlan) -> tuple[Limit, ...]:
    """The buckets every message of a campaign takes from, but for its mailbox's, its
    server's and its provider's. Daily caps are spread over the campaign's sending window,
    hourly ones over the hour."""
    day, hour = plan.sending_seconds, 3600.0
    limits: list[Limit] = []
    campaign_key = f"campaign:{uid}"
    if plan.per_hour:
        limits.append(Limit.spread(f"{campaign_key}:hour", plan.per_hour, hour))
    if plan.per_day:
        limits.append(Limit.spread(f"{campaign_key}:day", plan.per_day, day))
    if plan.campaign_daily_limit:
        limits.append(Limit.spread(f"{campaign_key}:warmup", plan.campaign_daily_limit, day))
    return tuple(limits)


def _mailbox_limits(uid: uuid.UUID, mailbox: PlanMailbox, plan: CampaignPlan) -> tuple[Limit, ...]:
    """The buckets of one mailbox: its own daily cap (today's, warm-up applied), shared by
    every campaign sending from it, and the campaign's throttle.perMailboxPerDay when lower."""
    day = plan.sending_seconds
    address = mailbox.address.lower()
    limits = [Limit.spread(f"mailbox:{address}", mailbox.daily_limit, day)]
    if plan.mailboxes and plan.per_mailbox_per_day < mailbox.daily_limit:
        limits.append(
            Limit.spread(f"campaign:{uid}:mailbox:{address}", plan.per_mailbox_per_day, day)
        )
    return tuple(limits)


def rendezvous(address_hash: bytes, mailboxes: Sequence[PlanMailbox]) -> int:
    """The index of the mailbox a new contact gets: weighted rendezvous hashing of its
    address hash, each mailbox weighted by today's limit. Deterministic (every sender pod
    picks the same one), shares proportional to the limits (so the mailboxes fill at the
    same pace), and a mailbox added or removed moves only the contacts it gains or loses."""
    if len(mailboxes) == 1:
        return 0  # the common case (no rotation): no hashing per message
    best, best_score = 0, math.inf
    for index, mailbox in enumerate(mailboxes):
        digest = hashlib.sha256(address_hash + mailbox.address.lower().encode()).digest()
        unit = (int.from_bytes(digest[:8], "big") + 1) / 2.0**64  # in (0, 1]
        score = -math.log(unit) / mailbox.daily_limit
        if score < best_score:
            best, best_score = index, score
    return best


def _server_limits(relay: Relay, plan: CampaignPlan) -> tuple[Limit, ...]:
    """The buckets of one server (its warm-up allowance and hourly cap)."""
    limits = []
    if relay.daily_limit:
        limits.append(
            Limit.spread(f"server:{relay.name}:warmup", relay.daily_limit, plan.sending_seconds)
        )
    if relay.max_per_hour:
        limits.append(Limit.spread(f"server:{relay.name}:hour", relay.max_per_hour, 3600.0))
    return tuple(limits)


@dataclass(frozen=True)
class _Route:
    """One relay a campaign can send through, with its pool and its server's buckets."""

    relay: Relay
    pool: RelayPool
    limits: tuple[Limit, ...]


@dataclass(frozen=True)
class _Mailbox:
    """One mailbox a campaign sends from, ready to use: its identity, signer, routes, buckets."""

    spec: PlanMailbox
    identity: Identity
    signer: DkimSigner
    routes: tuple[_Route, ...]
    limits: tuple[Limit, ...]


@dataclass
class _Campaign:
    uid: uuid.UUID
    plan: CampaignPlan
    renderer: Renderer
    mailboxes: tuple[_Mailbox, ...]
    limits: tuple[Limit, ...]
    loaded_at: float
    window: dict[str, int] = field(default_factory=dict)
    """The stop rules' window counts as last read from the database."""
    unwritten: dict[str, int] = field(default_factory=lambda: {"done": 0, "bounced": 0})
    """Outcomes of this sender not written yet, counted as the window counts them."""
    window_read_at: float = 0.0
    stopped: str | None = None
    """The stop rule that fired (this sender closed the gate): nothing more is sent."""

    def __post_init__(self) -> None:
        self._by_address = {m.spec.address.lower(): m for m in self.mailboxes}
        self._specs = [m.spec for m in self.mailboxes]

    def fresh(self) -> bool:
        return time.monotonic() - self.loaded_at < _CAMPAIGN_TTL

    def mailbox_for(self, delivery: Claimed) -> _Mailbox:
        """The delivery's own mailbox (it keeps it across retries and throttle waits), else
        (sticky) the one its address was last sent from, else a new one by rendezvous. A
        mailbox no longer in the plan (paused, removed) is not kept."""
        wanted = [delivery.mailbox, delivery.previous_mailbox if self.plan.sticky else None]
        for address in wanted:
            if address and address.lower() in self._by_address:
                return self._by_address[address.lower()]
        return self.mailboxes[rendezvous(delivery.address_hash, self._specs)]


class Sender:
    def __init__(
        self,
        pool: asyncpg.Pool,
        config: SenderConfig,
        *,
        secrets: SecretReader,
        redis: Redis | None = None,
        mx_lookup: bool = False,
        egress: EgressPolicy | None = None,
        resolver: dns.asyncresolver.Resolver | None = None,
    ) -> None:
        self.pool = pool
        self.config = config
        self.secrets = secrets
        # The tenant's Redis user may touch only its own prefix (common.tenant_redis).
        prefix = f"{tenant_key_prefix(config.tenant_id)}tb:"
        self.buckets = TokenBuckets(redis, prefix) if redis is not None else None
        self.mx_lookup = mx_lookup
        self.egress = egress
        """The platform's egress policy, applied to every relay address at connect time."""
        self.resolver = resolver
        """Resolves relay names for that check (None: the system's resolver)."""
        self._campaigns: dict[uuid.UUID, _Campaign] = {}
        self._campaign_locks: dict[uuid.UUID, asyncio.Lock] = {}
        self._relays: dict[tuple[str, int, str, str | None], RelayPool] = {}
        self._outcomes: asyncio.Queue[Outcome] = asyncio.Queue()
        self._batch_full = asyncio.Event()
        """Set when a full batch of outcomes waits to be written."""
        self._in_flight: set[asyncio.Task[None]] = set()
        self._held: set[int] = set()
        """Deliveries this sender claimed whose outcome is not written yet."""
        self._released: set[int] = set()
        """Of those, the ones written since the last claim started (see _claim_loop)."""
        self._freed = asyncio.Event()
        """Set when a delivery task ends (its slot is free); the claim loop waits on it."""
        self._mx_cache: dict[str, str] = {}
        self._down: dict[int, float] = {}
        """Relay pools (by id) not to use before a monotonic time: they could not connect."""
        self._window_lock = asyncio.Lock()
        """Held while outcomes are written and uncounted, and while a window is read."""
        self._unwritten: dict[int, tuple[uuid.UUID, bool]] = {}
        """Delivery id -> (campaign, bounced) of outcomes counted in a campaign's `unwritten`."""
        self._strikes: dict[tuple[BlockScope, str], list[float]] = {}
        """Monotonic times of the blocks this sender saw, per server or domain."""
        self._blocked: dict[tuple[BlockScope, str], float] = {}
        """Servers (by name) and domains not to send through or from before a monotonic
        time: receivers kept blocking them (seen here, or recorded by others)."""
        self._blocks_read_at = -math.inf
        self._signing = Signing(config.signing_processes)
        """Makes the DKIM signatures; its processes start with the first message and stop
        at the end of `run()`."""
        self.sent = 0

    # ---------------------------------------------------------------- main loop

    async def run(self, stop: asyncio.Event, *, idle_rounds: int = 0) -> None:
        """Send until `stop` is set (or, with `idle_rounds`, until that many claims in a row
        found nothing due); then finish in-flight deliveries and record them."""
        recorder = asyncio.create_task(self._record_loop(stop))
        try:
            await self._claim_loop(stop, idle_rounds)
        finally:
            if self._in_flight:
                await asyncio.gather(*self._in_flight, return_exceptions=True)
            stop.set()
            await recorder
            for relay in self._relays.values():
                await relay.close()
            await self._signing.close()

    async def run_until_idle(self, idle_rounds: int = 2) -> None:
        """Send until nothing is due (benchmarks and tests of a finite batch)."""
        await self.run(asyncio.Event(), idle_rounds=idle_rounds)

    async def _claim_loop(self, stop: asyncio.Event, idle_rounds: int) -> None:
        idle = failures = 0
        # Claims in batches: a claim is a round trip and a statement whatever it returns, so
        # claiming per freed slot cost PostgreSQL (and this loop) more per message than the
        # rows themselves. The loop gathers freed slots until a batch's worth is free, but
        # never longer than CLAIM_GATHER_SECONDS: a row due now (a promised token, a retry)
        # is claimed at most that late, far less than the poll interval an idle sender waits,
        # so a promise is met (test_sender_backlog; an earlier try that waited for a quarter
        # of the slots with no bound made promised rows come back a third time there).
        want = min(self.config.claim_batch, max(1, self.config.concurrency // 4))
        loop = asyncio.get_running_loop()
        gather_until: float | None = None
        while not stop.is_set():
            free = self.config.concurrency - len(self._in_flight)
            if free < want and self._in_flight:
                now = loop.time()
                if free > 0 and gather_until is None:
                    gather_until = now + CLAIM_GATHER_SECONDS
                if free <= 0 or (gather_until is not None and now < gather_until):
                    self._freed.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout_at(None if free <= 0 else gather_until):
                            await self._freed.wait()
                    continue
            gather_until = None
            # Outcomes written before this claim starts cannot be in what it returns as
            # expired leases; ones written while it runs can (their row was re-claimed first).
            self._held -= self._released
            self._released.clear()
            try:
                await self._read_blocks()
                # The claim opens the tenant's scope itself: one round trip (migration 0016).
                asked = min(free, self.config.claim_batch)
                async with self.pool.acquire() as conn:
                    batch = await claim(
                        conn,
                        self.config.owner,
                        asked,
                        self.config.lease,
                        self.config.campaign_uid,
                        tenant_id=self.config.tenant_id,
                    )
            except TRANSIENT as error:
                # A database restart or failover: wait and claim again, never exit.
                failures += 1
                delay = min(self.config.transient_backoff, 0.5 * 2**failures)
                log.warning("claiming failed (%s); retrying in %.1f s", error, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                continue
            failures = 0
            if batch:
                # Even after a short batch the loop asks again at once: rows that came due
                # during the claim are taken without waiting a poll, so promised rows do not
                # come back in clumps.
                idle = 0
                self._start(batch)
                continue
            # Nothing due: wait for the next poll.
            if idle_rounds and not self._in_flight:
                await self._outcomes.join()  # recorded, so a deferral is due again
                idle += 1
                if idle >= idle_rounds:
                    return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.poll_interval)

    def _start(self, batch: list[Claimed]) -> None:
        """A task per claimed delivery (but those this sender still holds)."""
        for delivery in batch:
            if delivery.id in self._held:
                # Its lease passed while this sender still had it (a starved event loop:
                # a send or an outcome write slower than the lease): its outcome is still
                # to come from here, so it is not sent a second time.
                log.warning("delivery %d: lease passed before its outcome was written", delivery.id)
                continue
            self._held.add(delivery.id)
            task = asyncio.create_task(self._deliver(delivery))
            self._in_flight.add(task)
            IN_FLIGHT.set(len(self._in_flight))
            task.add_done_callback(self._done)

    async def _read_blocks(self) -> None:
        """Every BLOCK_REFRESH_SECONDS: skip the servers and domains with BLOCK_STRIKES
        blocks in the window, whoever saw them (another pod's relay replies, the intake's
        DSNs), until BLOCK_PAUSE_SECONDS after the latest; and the shared-pool servers
        blocked for every tenant (common.db.blocks.pool_blocks)."""
        now = time.monotonic()
        if now - self._blocks_read_at < BLOCK_REFRESH_SECONDS:
            return
        async with tenant_connection(self.pool, self.config.tenant_id) as conn:
            strikes = await recent_strikes(conn)
            pools = await pool_blocks(conn)
        self._blocks_read_at = now
        for found in strikes:
            key = (found.scope, found.target)
            until = now - found.age + BLOCK_PAUSE_SECONDS
            if until > max(now, self._blocked.get(key, 0.0)):
                if self._blocked.get(key, 0.0) <= now:
                    log.warning(
                        "%s %s: %d blocks by receivers within %.0f s; skipped for %.0f s",
                        found.scope,
                        found.target,
                        found.count,
                        BLOCK_WINDOW_SECONDS,
                        until - now,
                    )
                self._blocked[key] = until
        # Shared-pool servers blocked by receivers for any tenant on them (migration 0014):
        # skipped as if this tenant had seen the strikes itself.
        for pool in pools:
            key = (BlockScope.SERVER, pool.server)
            until = now + pool.seconds_left
            if until > max(now, self._blocked.get(key, 0.0)):
                if self._blocked.get(key, 0.0) <= now:
                    log.warning(
                        "shared-pool server %s: blocked by receivers (mail of this or other "
                        "tenants); skipped for %.0f s",
                        pool.server,
                        pool.seconds_left,
                    )
                self._blocked[key] = until

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._freed.set()
        IN_FLIGHT.set(len(self._in_flight))
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery task failed", exc_info=task.exception())

    async def _record_loop(self, stop: asyncio.Event) -> None:
        while True:
            # One timer per batch (not one per outcome): wait for `record_batch` outcomes or
            # `record_interval` seconds, whichever comes first, then take what is there.
            if self._outcomes.qsize() < self.config.record_batch:
                self._batch_full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._batch_full.wait(), self.config.record_interval)
            batch: list[Outcome] = []
            while not self._outcomes.empty() and len(batch) < self.config.record_batch:
                batch.append(self._outcomes.get_nowait())
            if batch:
                async with self._window_lock:
                    await self._write(batch)
                    campaigns = self._written(batch)
                self._released.update(outcome.id for outcome in batch)
                await self._refresh(campaigns)
                for _ in batch:
                    self._outcomes.task_done()
            elif stop.is_set() and not self._in_flight and self._outcomes.empty():
                return

    def _written(self, batch: list[Outcome]) -> set[uuid.UUID]:
        """Outcomes are in the database now: stop counting them as unwritten (under the
        window lock with the write, so a window read never counts one twice). Returns
        their campaigns."""
        uids = set()
        for outcome in batch:
            entry = self._unwritten.pop(outcome.id, None)
            campaign = self._campaigns.get(entry[0]) if entry is not None else None
            if entry is not None and campaign is not None:
                campaign.unwritten["done"] -= 1
                campaign.unwritten["bounced"] -= int(entry[1])
                uids.add(entry[0])
        return uids

    async def _refresh(self, uids: set[uuid.UUID]) -> None:
        """Re-read the windows of the batch's campaigns (with what the intake added: its
        bounces and complaints) at most every WINDOW_REFRESH_SECONDS (the window query counts
        the campaign's rows; this sender's own outcomes are counted as they happen), and stop
        the ones a rule fires for."""
        now = time.monotonic()
        for uid in uids:
            campaign = self._campaigns.get(uid)
            if (
                campaign is not None
                and campaign.plan.stop_rules is not None
                and campaign.stopped is None
                and now - campaign.window_read_at >= WINDOW_REFRESH_SECONDS
            ):
                await self._stop(campaign)

    async def _write(self, batch: list[Outcome]) -> None:
        """Write a batch, retrying a database hiccup for as long as the leases last (after
        that the rows may be another sender's, whose outcome is the one that counts)."""
        deadline = time.monotonic() + self.config.lease.total_seconds()
        attempt = 0
        while True:
            try:
                async with tenant_connection(self.pool, self.config.tenant_id) as conn:
                    accepted = await record(conn, batch, self.config.owner)
                if accepted < len(batch):
                    log.warning(
                        "%d of %d outcomes not recorded: their leases had passed to another sender",
                        len(batch) - accepted,
                        len(batch),
                    )
                return
            except TRANSIENT as error:
                delay = min(self.config.transient_backoff, 0.5 * 2**attempt)
                if time.monotonic() + delay > deadline:
                    log.error("gave up recording %d outcomes; their leases expire", len(batch))
                    return
                log.warning("recording %d outcomes failed (%s); retrying", len(batch), error)
                await asyncio.sleep(delay)
                attempt += 1

    # ---------------------------------------------------------------- one delivery

    async def _deliver(self, delivery: Claimed) -> None:
        try:
            outcome = await self._attempt(delivery)
        except TRANSIENT as error:
            # Redis, PostgreSQL or the API hiccupped: not this delivery's fault, no attempt.
            log.warning("delivery %d interrupted (%s); requeued", delivery.id, error)
            outcome = self._requeue(delivery, f"interrupted: {error}")
        except Exception as error:  # every path records an outcome: a bug is an attempt
            log.exception("delivery %d failed unexpectedly", delivery.id)
            outcome = self._defer(delivery, 0, None, f"sender error: {error!r}")
        _MESSAGES_BY_STATE[outcome.state].inc()
        if outcome.mailbox is not None:
            MAILBOX_MESSAGES.labels(mailbox=outcome.mailbox, outcome=outcome.state.value).inc()
        if outcome.state == DeliveryState.SENT:
            self.sent += 1
        campaign = self._campaigns.get(delivery.campaign_uid)
        counted = campaign is not None and outcome.state in (
            DeliveryState.SENT,
            DeliveryState.BOUNCED,
        )
        if campaign is not None and counted:
            # Counted before it is queued, so the recorder cannot write it before it is
            # counted (it would never be uncounted).
            bounced = outcome.state == DeliveryState.BOUNCED
            campaign.unwritten["done"] += 1
            campaign.unwritten["bounced"] += int(bounced)
            self._unwritten[outcome.id] = (delivery.campaign_uid, bounced)
        self._outcomes.put_nowait(outcome)
        if self._outcomes.qsize() >= self.config.record_batch:
            self._batch_full.set()
        if campaign is not None and counted:
            await self._check(campaign)

    async def _check(self, campaign: _Campaign) -> None:
        """Check a campaign's stop rules as its messages finish, so it stops within the
        messages in flight of a breach (not at the operator's next pass, up to a minute of
        sending later)."""
        rules = campaign.plan.stop_rules
        if rules is None or campaign.stopped is not None:
            return
        window = {
            key: campaign.window.get(key, 0) + campaign.unwritten.get(key, 0)
            for key in ("done", "bounced", "complained")
        }
        if rules.breached(window) is not None:
            await self._stop(campaign)

    async def _stop(self, campaign: _Campaign) -> None:
        """Re-check against the database (the intake's bounces and complaints count too) and
        close the gate when a rule fires."""
        rules = campaign.plan.stop_rules
        if rules is None:
            return
        try:
            async with (
                self._window_lock,
                tenant_connection(self.pool, self.config.tenant_id) as conn,
            ):
                reason, window = await enforce_stop_rules(
                    conn, campaign.uid, rules, dict(campaign.unwritten)
                )
        except TRANSIENT as error:
            log.warning("checking the stop rules of %s failed (%s)", campaign.uid, error)
            return
        campaign.window = window
        campaign.window_read_at = time.monotonic()
        if reason is not None and campaign.stopped is None:
            campaign.stopped = reason
            log.warning("campaign %s stopped: %s", campaign.uid, reason)

    async def _attempt(self, delivery: Claimed) -> Outcome:
        if delivery.email is None:
            return Outcome(delivery.id, DeliveryState.SKIPPED, reason="contact was erased")
        if delivery.suppressed:
            return Outcome(delivery.id, DeliveryState.SKIPPED, reason="address is suppressed")
        if delivery.expired_claims >= self.config.max_expired_claims:
            return Outcome(
                delivery.id,
                DeliveryState.FAILED,
                reason=f"claimed {delivery.expired_claims} times by senders that stopped "
                "before recording an outcome (crash or stall on this delivery)",
            )
        try:
            campaign = await self._campaign(delivery.campaign_uid)
        except (KeyError, ValueError, RenderError, ssl.SSLError) as error:
            # The campaign cannot send at all (missing Secret or key, unreadable CA, bad
            # template; an SSLError is an OSError, so it is named before TRANSIENT): not this
            # contact's fault. Pause it with the reason (the Campaign shows it); the delivery
            # waits, without using an attempt, until someone fixes it and resumes.
            reason = f"{CAMPAIGN_FAULT}{str(error).strip(chr(39))}"
            async with tenant_connection(self.pool, self.config.tenant_id) as conn:
                await pause_campaign(conn, delivery.campaign_uid, reason)
            log.warning("campaign %s paused: %s", delivery.campaign_uid, reason)
            return self._requeue(delivery, reason)
        if campaign.stopped is not None:
            return self._requeue(delivery, f"stopped: {campaign.stopped}")
        mailbox = campaign.mailbox_for(delivery)
        outcome = await self._send(delivery, delivery.email, campaign, mailbox)
        # Recorded on the row: its retries and throttle waits keep this mailbox, and the
        # contact's later campaigns find it (sticky rotation).
        return dataclasses.replace(outcome, mailbox=mailbox.spec.address)

    async def _send(
        self, delivery: Claimed, email: str, campaign: _Campaign, mailbox: _Mailbox
    ) -> Outcome:
        domain = mailbox.spec.address.rpartition("@")[2].lower()
        now = time.monotonic()
        blocked = self._blocked.get((BlockScope.DOMAIN, domain), 0.0) - now
        if blocked > 0:
            # Receivers block the domain itself: its mail waits until the block ends (it
            # keeps its mailbox, as when every server is down), not claimed over and over
            # meanwhile; the campaign's other domains keep sending.
            return self._requeue(delivery, f"domain {domain} is blocked by receivers", blocked)
        route = self._route(mailbox.routes)
        if route is None:
            # Each relay is down (30 s) or blocked (up to BLOCK_PAUSE_SECONDS): wait for the
            # first to come back.
            back = min(
                max(
                    self._down.get(id(r.pool), 0.0),
                    self._blocked.get((BlockScope.SERVER, r.relay.name), 0.0),
                )
                for r in mailbox.routes
            )
            return self._requeue(
                delivery,
                f"every relay of {mailbox.spec.address} is unreachable or blocked",
                max(0.0, back - now),
            )
        wait = await self._throttle(campaign, mailbox, route, email, str(delivery.id))
        if wait > 0:
            # Scheduled for when a token exists for it (see common.throttle), so the backlog
            # is not re-claimed at every refill.
            return Outcome(
                delivery.id,
                DeliveryState.QUEUED,
                reason=THROTTLED,
                retry_in=timedelta(seconds=wait),
                count_attempt=False,
            )
        tenant = self.config.tenant_id
        parts = MessageParts(
            delivery_id=delivery.id,
            campaign_uid=delivery.campaign_uid,
            to=email,
            fields=delivery.fields,
            unsubscribe_token=make_token(
                self.config.token_key, TokenPurpose.UNSUBSCRIBE, tenant, delivery.id
            ),
            bounce_token=make_token(
                self.config.token_key, TokenPurpose.BOUNCE, tenant, delivery.id
            ),
        )
        try:
            message = campaign.renderer.render(parts, identity=mailbox.identity)
        except RenderError as error:
            return Outcome(delivery.id, DeliveryState.FAILED, reason=str(error))
        signed = await self._signing.sign(mailbox.signer, message)
        if campaign.stopped is not None:
            # A rule fired while this one was throttled or rendered: it stays unsent.
            return self._requeue(delivery, f"stopped: {campaign.stopped}")
        started = time.perf_counter()
        result = await route.pool.send(
            return_path(mailbox.spec.domain, parts.bounce_token),
            email,
            signed,
            deadline=self.config.lease.total_seconds() / 2,
        )
        SEND_SECONDS.observe(time.perf_counter() - started)
        if result.unreachable:
            # Nothing was sent: skip this relay for a while, and the message goes through
            # another one at its next claim without using an attempt.
            self._down[id(route.pool)] = time.monotonic() + RELAY_DOWN_SECONDS
            log.warning("relay %s unreachable (%s)", route.relay.name, result.text)
            return self._requeue(delivery, f"relay {route.relay.name}: {result.text}")
        # Recorded on the row: a DSN arriving later names this server.
        outcome = await self._judge(delivery, route, domain, result)
        return dataclasses.replace(outcome, relay=route.relay.name)

    async def _judge(
        self, delivery: Claimed, route: _Route, domain: str, result: SendResult
    ) -> Outcome:
        """The outcome of a message the relay was reached for, from its reply."""
        if result.uncertain:
            # The relay may have accepted it: not again before a safe delay (same Message-ID).
            log.warning(
                "delivery %d: unknown result after DATA (%s); not sent again for %.0f s",
                delivery.id,
                result.text,
                self.config.uncertain_retry,
            )
            return Outcome(
                delivery.id,
                DeliveryState.DEFERRED,
                None,
                None,
                f"unknown result after DATA: {result.text}",
                retry_in=timedelta(seconds=self.config.uncertain_retry),
            )
        verdict = classify(result.code, result.text)
        if verdict.kind == Kind.SENT:
            return Outcome(delivery.id, DeliveryState.SENT, result.code, verdict.status)
        if verdict.kind == Kind.DEFER:
            return self._defer(delivery, result.code, verdict.status, result.text)
        if verdict.kind == Kind.HARD_BOUNCE:
            return Outcome(
                delivery.id, DeliveryState.BOUNCED, result.code, verdict.status, result.text
            )
        if verdict.kind == Kind.BLOCK:
            # Policy or reputation (5.7.1, "550 blocked"): not the recipient's mailbox, so
            # nobody is suppressed, and not the campaign's content, so it keeps sending; the
            # server that got it (or the domain, when the receiver says so) takes a strike
            # (several in a row: skipped for a while), recorded for every sender pod.
            scope = block_scope(result.text)
            target = route.relay.name if scope == BlockScope.SERVER else domain
            self._strike(scope, target)
            return Outcome(
                delivery.id,
                DeliveryState.FAILED,
                result.code,
                verdict.status,
                f"blocked via {route.relay.name}: {result.text}",
                block=Block(scope, target, "relay", delivery.id, verdict.status),
            )
        if verdict.kind == Kind.AUTH:
            # The domain failed DKIM/SPF/DMARC: every message of this campaign would, and so
            # would the domain's other campaigns: a strike against the domain (as a domain
            # reputation block is), which every sender pod reads.
            self._strike(BlockScope.DOMAIN, domain)
            reason = f"relay refused with {verdict.status}: {result.text}"[:300]
            async with tenant_connection(self.pool, self.config.tenant_id) as conn:
                await pause_campaign(conn, delivery.campaign_uid, reason)
            log.warning("campaign %s paused: %s", delivery.campaign_uid, reason)
            # Not the recipient's fault: the delivery waits for the campaign to resume.
            return Outcome(
                delivery.id,
                DeliveryState.DEFERRED,
                result.code,
                verdict.status,
                result.text,
                retry_in=timedelta(seconds=self.config.retry.base),
                count_attempt=False,
                block=Block(BlockScope.DOMAIN, domain, "relay", delivery.id, verdict.status),
            )
        return Outcome(delivery.id, DeliveryState.FAILED, result.code, verdict.status, result.text)

    def _strike(self, scope: BlockScope, target: str) -> None:
        """Count a block against a server or domain; `BLOCK_STRIKES` within
        `BLOCK_WINDOW_SECONDS` and it is skipped for `BLOCK_PAUSE_SECONDS` (a server's
        messages go through the campaign's other servers, a domain's wait), so a listed IP
        stops burning the audience. At once here; other pods learn it from the database."""
        now = time.monotonic()
        key = (scope, target)
        recent = [t for t in self._strikes.get(key, []) if now - t < BLOCK_WINDOW_SECONDS]
        recent.append(now)
        self._strikes[key] = recent
        if len(recent) >= BLOCK_STRIKES:
            self._blocked[key] = now + BLOCK_PAUSE_SECONDS
            self._strikes[key] = []
            log.warning(
                "%s %s: %d blocks (5.7.x or bare 5xx) within %.0f s; skipped for %.0f s",
                scope,
                target,
                len(recent),
                BLOCK_WINDOW_SECONDS,
                BLOCK_PAUSE_SECONDS,
            )

    def _defer(self, delivery: Claimed, code: int, status: str | None, text: str) -> Outcome:
        delay = self.config.retry.next_delay(delivery.attempts)
        if delay is None:
            return Outcome(
                delivery.id,
                DeliveryState.FAILED,
                code or None,
                status,
                f"gave up after {delivery.attempts} attempts: {text}",
            )
        return Outcome(
            delivery.id,
            DeliveryState.DEFERRED,
            code or None,
            status,
            text,
            retry_in=timedelta(seconds=delay),
        )

    def _requeue(self, delivery: Claimed, reason: str, after: float = 0.0) -> Outcome:
        """Back to the queue without using an attempt (nothing was tried), claimed again
        after `after` seconds (what it waits for lasts that long) plus the jittered backoff."""
        delay = after + self.config.transient_backoff * random.uniform(0.5, 1.0)  # noqa: S311
        return Outcome(
            delivery.id,
            DeliveryState.QUEUED,
            reason=reason,
            retry_in=timedelta(seconds=delay),
            count_attempt=False,
        )

    async def _throttle(
        self, campaign: _Campaign, mailbox: _Mailbox, route: _Route, email: str, ticket: str
    ) -> float:
        """0 when the message may go now, else seconds until it should be tried again.
        `ticket` (the delivery's id): the buckets that promised this row a token know it, so
        it comes back as a holder only in those (a row throttled by its provider's bucket
        must not take a token its mailbox's bucket promised to another row)."""
        if self.buckets is None:
            return 0.0
        group = await self._provider(email.rpartition("@")[2])
        provider = Limit.per_second(f"provider:{group}", self.config.provider_rate)
        wait = await self.buckets.take(
            [*campaign.limits, *mailbox.limits, *route.limits, provider], ticket=ticket
        )
        if wait.seconds <= 0:
            return 0.0
        # Jitter: a promised token waits in the bucket, so only 1% (at most a second: enough
        # that senders do not all ask Redis in the same millisecond, too little to overtake
        # the next promise); an estimate is spread wide, so the rows beyond the promise
        # horizon do not all come back together.
        if wait.promised:
            return wait.seconds + random.uniform(0, min(1.0, wait.seconds / 100))  # noqa: S311
        return wait.seconds * random.uniform(1.0, 1.5)  # noqa: S311

    async def _provider(self, domain: str) -> str:
        domain = domain.lower()
        if domain in self._mx_cache:
            return self._mx_cache[domain]
        hosts: list[str] = []
        if self.mx_lookup:
            import dns.asyncresolver
            import dns.exception

            try:
                answer = await dns.asyncresolver.resolve(domain, "MX", lifetime=3.0)
                hosts = [str(r.exchange) for r in answer]
            except dns.exception.DNSException:
                hosts = []
        group = provider_group(domain, hosts)
        self._mx_cache[domain] = group
        return group

    async def _campaign(self, uid: uuid.UUID) -> _Campaign:
        cached = self._campaigns.get(uid)
        if cached is not None and cached.fresh():
            return cached
        lock = self._campaign_locks.setdefault(uid, asyncio.Lock())
        async with lock:
            cached = self._campaigns.get(uid)
            if cached is not None and cached.fresh():
                return cached
            async with tenant_connection(self.pool, self.config.tenant_id) as conn:
                plan = await get_campaign_plan(conn, uid)
            if plan is None:
                raise KeyError(f"campaign {uid} has no plan")
            renderer = Renderer(plan)
            signers: dict[tuple[str, str], DkimSigner] = {}
            routes: dict[Relay, _Route] = {}
            mailboxes = []
            for spec in plan.senders():
                key = (spec.dkim_secret, spec.domain)
                if key not in signers:
                    signers[key] = await load_signer(self.secrets, *key)
                for relay in spec.relays:
                    if relay not in routes:
                        pool = await self._pool(relay)
                        routes[relay] = _Route(relay, pool, _server_limits(relay, plan))
                mailboxes.append(
                    _Mailbox(
                        spec,
                        # The plan's own From (spec.from) keeps its display name.
                        renderer.identity
                        if not plan.mailboxes
                        else Identity.of(
                            spec.display_name or plan.from_name, spec.address, spec.domain
                        ),
                        signers[key],
                        tuple(routes[relay] for relay in spec.relays),
                        _mailbox_limits(uid, spec, plan),
                    )
                )
            campaign = _Campaign(
                uid, plan, renderer, tuple(mailboxes), _campaign_limits(uid, plan), time.monotonic()
            )
            if cached is not None:
                # Outcomes counted on the old object are still to be written; a stop is
                # re-decided from the (possibly changed) rules.
                campaign.window, campaign.unwritten = cached.window, cached.unwritten
            self._campaigns[uid] = campaign
            return campaign

    async def _pool(self, relay: Relay) -> RelayPool:
        """The connection pool of a relay (shared by the campaigns using it)."""
        username = password = None
        if relay.credentials_secret:
            data = await self.secrets.read(relay.credentials_secret)
            username = data["username"].decode()
            password = data["password"].decode()
        tls_context = None
        if relay.ca_secret and relay.ca_key:
            ca = (await self.secrets.read(relay.ca_secret))[relay.ca_key]
            tls_context = ssl.create_default_context(cadata=ca.decode())
        key = (relay.host, relay.port, relay.tls, username)
        if key not in self._relays:
            self._relays[key] = RelayPool(
                relay.host,
                relay.port,
                size=self.config.connections_per_relay,
                tls=relay.tls,
                username=username,
                password=password,
                tls_context=tls_context,
                helo=self.config.helo,
                egress=self.egress,
                field=f"SmtpServer {relay.name}: relay host",
                resolver=self.resolver,
            )
        return self._relays[key]

    def _route(self, routes: Sequence[_Route]) -> _Route | None:
        """A relay for one message of a mailbox, weighted among those not marked down; None
        when every one is down (the message waits; the mark expires, so a recovered relay is
        found)."""
        now = time.monotonic()
        weighted = [r for r in routes if r.relay.weight > 0] or list(routes)
        healthy = [
            r
            for r in weighted
            if self._down.get(id(r.pool), 0.0) <= now
            and self._blocked.get((BlockScope.SERVER, r.relay.name), 0.0) <= now
        ]
        if len(healthy) <= 1:
            return healthy[0] if healthy else None
        return random.choices(healthy, [max(r.relay.weight, 1) for r in healthy])[0]  # noqa: S311
