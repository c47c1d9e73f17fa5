"""Token buckets in Redis, shared by every sender pod, and the limits a message is subject to.

    buckets = TokenBuckets(redis)
    wait = await buckets.take([Limit("campaign:<uid>:hour", per_hour=600), ...])
    if wait > 0: ...   # nothing was taken; try again in `wait` seconds

`take` is all-or-nothing across the given buckets, in one Lua script (atomic in Redis): a
message takes a token from its campaign, server, destination provider and mailbox buckets at
once, or from none of them, so a refused message never burns another bucket's allowance.

A bucket of capacity C refilling at C per period P allows a burst of C and then C per P on
average; with P = 1 day and C = the daily cap, it is a sliding daily cap (no midnight rush).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

__all__ = [
    "Limit",
    "TokenBuckets",
    "provider_group",
    "warmup_daily_limit",
]

_TAKE = """
local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local wait = 0
local state = {}
for i, key in ipairs(KEYS) do
    local capacity = tonumber(ARGV[1 + 2 * i])
    local rate = tonumber(ARGV[2 + 2 * i])
    local saved = redis.call('HMGET', key, 'tokens', 'at')
    local tokens = tonumber(saved[1]) or capacity
    local at = tonumber(saved[2]) or now
    tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
    state[i] = tokens
    if tokens < n then
        wait = math.max(wait, (n - tokens) / rate)
    end
end
if wait > 0 then
    return tostring(wait)
end
for i, key in ipairs(KEYS) do
    local capacity = tonumber(ARGV[1 + 2 * i])
    local rate = tonumber(ARGV[2 + 2 * i])
    redis.call('HSET', key, 'tokens', state[i] - n, 'at', now)
    redis.call('EXPIRE', key, math.ceil(capacity / rate) + 60)
end
return '0'
"""


@dataclass(frozen=True)
class Limit:
    """`capacity` messages per `period` seconds, as one bucket named `key`."""

    key: str
    capacity: float
    period: float

    @property
    def rate(self) -> float:
        return self.capacity / self.period

    @classmethod
    def per_hour(cls, key: str, count: int) -> Limit:
        return cls(key, float(count), 3600.0)

    @classmethod
    def per_day(cls, key: str, count: int) -> Limit:
        return cls(key, float(count), 86400.0)

    @classmethod
    def per_second(cls, key: str, count: float, burst: float | None = None) -> Limit:
        capacity = burst if burst is not None else max(1.0, count)
        return cls(key, capacity, capacity / count)


class TokenBuckets:
    """All buckets live under `prefix` in one Redis (the script touches several keys at once)."""

    def __init__(self, redis: Redis, prefix: str = "pm:tb:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._script = redis.register_script(_TAKE)

    async def take(self, limits: Sequence[Limit], n: int = 1) -> float:
        """Take `n` tokens from every bucket, or none; 0 when taken, else seconds to wait."""
        if not limits:
            return 0.0
        for limit in limits:
            if n > limit.capacity:
                raise ValueError(f"{n} tokens can never fit bucket {limit.key} of {limit.capacity}")
        args: list[float | int] = [time.time(), n]
        for limit in limits:
            args += [limit.capacity, limit.rate]
        result = await self._script(keys=[self._prefix + limit.key for limit in limits], args=args)
        return float(result)


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
