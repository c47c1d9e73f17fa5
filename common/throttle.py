"""Token buckets in Redis, shared by every sender pod, and the limits a message is subject to.

    buckets = TokenBuckets(redis, tenant_key_prefix(tenant_id) + "tb:")
    wait = await buckets.take([Limit.spread("mailbox:jane@acme.example", 50, 8 * 3600), ...])
    if wait > 0: ...   # nothing was taken; a token for this message exists in `wait` seconds

`take` is all-or-nothing across the given buckets, in one Lua script (atomic in Redis): a
message takes a token from its campaign, server, destination provider and mailbox buckets at
once, or from none of them, so a refused message never burns another bucket's allowance.

**Smooth, not bursty.** A cap of N per period P is a bucket holding at most a small burst B
(about 2% of N, at least 1) refilled at (N - B + 1) / P: whatever the timing, no interval of
length P sees more than N messages, and the N are spread across the period instead of leaving
in the first second. The period of a daily cap is the campaign's sending window (8 to 18 is
10 hours), so a day's allowance is spread over the hours the campaign may send.

**Reservations, not churn.** A refused message is told when a token will exist *for it*: each
bucket keeps `next`, the time up to which refills are already promised to earlier refused
messages, and a new refusal is scheduled after them (and pushes `next` by one token). So a
backlog of 500 rows behind a 50-a-day mailbox is scheduled once, row after row, one token
apart, instead of every row being re-claimed each time any token appears. While promises are
outstanding, a message without one queues behind them rather than taking their tokens. A
promise is a bucket's: each message passes its ticket (the delivery's id), and a bucket that
refuses it keeps the ticket until the message takes a token, so a message promised a token
by one bucket (its provider's, say) still queues behind the promises of the others (its
mailbox's). A promise lasts as long as its chain: once every promised time has passed, a
late holder's token is anyone's, and a holder coming back after a new chain started queues
like any message, so the promised schedule is never overbooked. Promises reach at most
`HORIZON` seconds ahead: rows beyond it are told to come back after the horizon without
a promise, so a cancelled backlog cannot hold a mailbox's tokens for weeks.

**Keys.** Every key lives under `tenant:<tenant id>:` (`common.tenant_redis.tenant_key_prefix`),
the only keys a tenant's Redis user may touch (`~tenant:<id>:*`). The sender uses no
platform-wide key.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

__all__ = [
    "HORIZON",
    "PROMISE_GRACE",
    "SLACK",
    "Limit",
    "TokenBuckets",
    "Wait",
    "burst_for",
    "provider_group",
    "warmup_daily_limit",
]

HORIZON = 86400.0
"""Seconds ahead up to which a refused message is promised a token."""
SLACK = 0.5
"""Tokens a message coming back for its promise may borrow (see the script); caps leave room
for it, so the cap still holds."""
PROMISE_GRACE = 86400.0
"""Seconds past its slot after which a promise is taken as abandoned (its row was deleted,
erased, moved to another mailbox, or its campaign paused) and dropped from the bucket. A
day: a row whose campaign's window closed overnight still finds its promise; one that does
come back later only queues again (it is not refused anything it was owed)."""

_TAKE = """
local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local horizon = tonumber(ARGV[3])
-- The message's ticket (its id; '' for none). A bucket that promises it a token keeps the
-- ticket as a field until the message takes one, so the message comes back as the holder
-- of a promise only in the buckets that made one: a row promised a token by its provider's
-- bucket must still queue behind the promises of its mailbox's bucket, else it takes a
-- token promised to another row (which then comes back to be refused and re-scheduled).
local ticket = ARGV[4] ~= '' and ('promise:' .. ARGV[4]) or nil
-- Abandoned promises (issue 10): each ticket is also in `<key>:promises`, scored by its
-- slot; a few whose slot is more than PROMISE_GRACE past are dropped at every take, so a
-- busy bucket (whose key never expires) holds only the promises of the last day or two.
local grace = tonumber(ARGV[#ARGV])
local slot = 0
local tokens = {}
local times = {}
local short = {}
local chain = {}
for i, key in ipairs(KEYS) do
    local burst = tonumber(ARGV[4 + 2 * i])
    local rate = tonumber(ARGV[5 + 2 * i])
    local saved = redis.call('HMGET', key, 'tokens', 'at', 'next', 'from', ticket or 'next')
    local have = tonumber(saved[1]) or burst
    local at = tonumber(saved[2]) or now
    local promised = tonumber(saved[3]) or 0
    -- A promise holds only in the chain that made it: once every promise's time has passed
    -- (`next` <= now), the tokens late holders left are free for anyone, and a new chain
    -- starts from what the bucket holds. A holder of the old chain coming back after that
    -- restart (`from`: the old chain's end) queues like any message; were it still a holder,
    -- it would take a token the new chain promised to another row, and that row would come
    -- back early for nothing (the promised schedule overbooked by every late holder).
    local holder = ticket ~= nil and saved[5] ~= false
        and tonumber(saved[5]) >= (tonumber(saved[4]) or 0)
    -- Concurrent takes reach Redis in another order than they read the clock: a late one
    -- must not move `at` back (the refill since would be counted twice).
    local t = math.max(now, at)
    times[i] = t
    chain[i] = promised
    have = math.min(burst, have + (t - at) * rate)
    tokens[i] = have
    -- A returning holder may be a little early for its token (the one before it came late,
    -- and a full bucket does not store the refill of its lateness): it may borrow up to
    -- SLACK. A message without a promise here queues behind those with one (first come,
    -- first served); one coming back for its promise takes what is there.
    local slack = holder and tonumber(ARGV[5]) or 0
    if have < n - slack or (not holder and promised > t) then
        local ready = math.max(t + math.max(0, n - have) / rate, promised)
        slot = math.max(slot, ready)
        short[i] = rate
    end
end
for _, key in ipairs(KEYS) do
    local stale = redis.call('ZRANGEBYSCORE', key .. ':promises', '-inf', now - grace,
                             'LIMIT', 0, 4)
    for _, id in ipairs(stale) do
        redis.call('HDEL', key, 'promise:' .. id)
        redis.call('ZREM', key .. ':promises', id)
    end
end
if slot > 0 then
    if slot - now > horizon then
        return tostring(-(slot - now))  -- beyond the horizon: no promise
    end
    for i, key in ipairs(KEYS) do
        if short[i] then
            if chain[i] <= times[i] then
                redis.call('HSET', key, 'from', chain[i])  -- a new chain starts here
            end
            local promised = slot + n / short[i]
            redis.call('HSET', key, 'next', promised)
            if ticket then
                redis.call('HSET', key, ticket, slot)
                redis.call('ZADD', key .. ':promises', slot, ARGV[4])
            end
            local ttl = math.ceil(promised - now) + 60
            if redis.call('TTL', key) < ttl then
                redis.call('EXPIRE', key, ttl)
            end
            redis.call('EXPIRE', key .. ':promises', redis.call('TTL', key))
        end
    end
    return tostring(slot - now)
end
for i, key in ipairs(KEYS) do
    local burst = tonumber(ARGV[4 + 2 * i])
    local rate = tonumber(ARGV[5 + 2 * i])
    redis.call('HSET', key, 'tokens', tokens[i] - n, 'at', times[i])
    if ticket then
        redis.call('HDEL', key, ticket)
        redis.call('ZREM', key .. ':promises', ARGV[4])
    end
    local ttl = math.ceil(burst / rate) + 60
    if redis.call('TTL', key) < ttl then
        redis.call('EXPIRE', key, ttl)
    end
    redis.call('EXPIRE', key .. ':promises', redis.call('TTL', key))
end
return '0'
"""


def burst_for(cap: int) -> int:
    """The burst allowed by a cap: about 2% of it, at least one message."""
    return max(1, min(cap, cap // 50))


@dataclass(frozen=True)
class Limit:
    """One bucket named `key`: holds at most `burst` tokens, refilled at `rate` per second."""

    key: str
    burst: float
    rate: float

    @classmethod
    def spread(cls, key: str, cap: int, period: float) -> Limit:
        """At most `cap` messages in any `period` seconds, spread across it."""
        if cap < 1 or period <= 0:
            raise ValueError(f"{key}: a cap must be at least 1 message over a positive period")
        burst = burst_for(cap)
        # Any `period` sees at most the bucket's content, its refill and the slack borrowed.
        return cls(key, float(burst), (cap - burst + 1 - SLACK) / period)

    @classmethod
    def per_second(cls, key: str, rate: float, burst: float | None = None) -> Limit:
        return cls(key, burst if burst is not None else max(1.0, rate), rate)


class Wait(NamedTuple):
    """`seconds` 0: taken. Else nothing was taken and a token exists in `seconds`: promised to
    this message, or (beyond `HORIZON`, `promised` False) an estimate to come back and ask."""

    seconds: float
    promised: bool


class TokenBuckets:
    """Buckets under `prefix` (a tenant's: `tenant_key_prefix(id) + "tb:"`) in one Redis (the
    script touches several keys at once)."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._sha = hashlib.sha1(_TAKE.encode()).hexdigest()  # noqa: S324 (Redis names scripts so)
        self._waiting: list[tuple[list[str], list[float | int | str], asyncio.Future[float]]] = []
        self._flushes: set[asyncio.Task[None]] = set()

    async def take(
        self,
        limits: Sequence[Limit],
        n: int = 1,
        *,
        ticket: str = "",
        now: float | None = None,
    ) -> Wait:
        """Take `n` tokens from every bucket, or none (then `Wait` says until when).
        `ticket`: the message's own id, the same on every try; in a bucket that promised it a
        token it comes back for that token (it does not queue behind the other promises
        again), in the others it queues like any message. "" (no ticket): never a holder."""
        if not limits:
            return Wait(0.0, True)
        for limit in limits:
            if n > limit.burst:
                raise ValueError(f"{n} tokens can never fit bucket {limit.key} of {limit.burst}")
        args: list[float | int | str] = [
            time.time() if now is None else now,
            n,
            HORIZON,
            ticket,
            SLACK,
        ]
        for limit in limits:
            args += [limit.burst, limit.rate]
        args.append(PROMISE_GRACE)  # last, read as ARGV[#ARGV]
        result = await self._evaluate([self._prefix + limit.key for limit in limits], args)
        return Wait(abs(result), result >= 0)

    async def _evaluate(self, keys: list[str], args: list[float | int | str]) -> float:
        """Run the script for one message. The takes asked for in one turn of the event loop
        (the deliveries of a claimed batch start together) go to Redis in one pipeline: one
        write and one read for all of them instead of a round trip each. Each script still
        runs atomically, in the order asked."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[float] = loop.create_future()
        self._waiting.append((keys, args, future))
        if len(self._waiting) == 1:
            loop.call_soon(self._flush)  # after the other tasks ready in this turn asked
        return await future

    def _flush(self) -> None:
        batch, self._waiting = self._waiting, []
        task = asyncio.ensure_future(self._run(batch))
        self._flushes.add(task)  # keep a reference until it is done
        task.add_done_callback(self._flushes.discard)

    async def _run(
        self, batch: list[tuple[list[str], list[float | int | str], asyncio.Future[float]]]
    ) -> None:
        try:
            results = await self._pipeline(batch)
        except BaseException as error:  # Redis or the network: every message of it is told
            for *_, future in batch:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(error, Exception):
                raise
            return
        for (*_, future), result in zip(batch, results, strict=True):
            if future.done():  # its delivery gave up waiting (deadline)
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(float(result))

    async def _pipeline(
        self, batch: list[tuple[list[str], list[float | int | str], asyncio.Future[float]]]
    ) -> list[Any]:
        for attempt in (1, 2):
            async with self._redis.pipeline(transaction=False) as pipe:
                for keys, args, _ in batch:
                    pipe.evalsha(self._sha, len(keys), *keys, *args)
                results: list[Any] = await pipe.execute(raise_on_error=False)
            if attempt == 1 and any(isinstance(r, NoScriptError) for r in results):
                # A restarted (or flushed) Redis forgot the script: load it, run them again.
                await self._redis.script_load(_TAKE)
                continue
            return results
        raise AssertionError("unreachable")


# Receivers whose many domains share one infrastructure (and one reputation budget): group by
# the MX host's suffix, so that all Google-hosted domains share Google's limit.
_PROVIDER_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("google.com", "google"),
    ("googlemail.com", "google"),
    ("outlook.com", "microsoft"),
    ("hotmail.com", "microsoft"),
    ("yahoodns.net", "yahoo"),
    ("icloud.com", "apple"),
    ("me.com", "apple"),
    ("zoho.com", "zoho"),
    ("zoho.eu", "zoho"),
    ("protonmail.ch", "proton"),
    ("mimecast.com", "mimecast"),
    ("pphosted.com", "proofpoint"),
)


def provider_group(domain: str, mx_hosts: Iterable[str] = ()) -> str:
    """The throttle group of a recipient domain: a known provider from its MX hosts, else the
    MX host's parent domain, else the domain itself."""
    hosts = [host.rstrip(".").lower() for host in mx_hosts]
    for host in hosts:
        for suffix, group in _PROVIDER_SUFFIXES:
            if host == suffix or host.endswith("." + suffix):
                return group
    if hosts:
        return ".".join(sorted(hosts)[0].split(".")[-2:])
    return domain.rstrip(".").lower()


def warmup_daily_limit(initial: int, increase_percent: int, day: int, target: int | None) -> int:
    """Messages allowed on warm-up `day` (0 = first): initial x (1 + increase)^day, capped."""
    if day < 0:
        return initial
    # Compare in logarithms: day 400 at +100% would overflow a float.
    growth = day * math.log1p(increase_percent / 100)
    cap = float(target) if target is not None else 1e12
    if math.log(initial) + growth >= math.log(cap):
        return int(cap)
    return int(initial * math.exp(growth))
