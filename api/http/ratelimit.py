"""Request rate limits per API key, in Redis (shared by every API replica).

A fixed window of one minute per key: `INCR` of `pm:api:rl:<key id>:<minute>`, expiring with
the window. Simple and exact within a window; across a window's edge a client can send up to
twice the limit in a short burst, which a per-minute allowance tolerates. Every answer to an
API-key request carries the IETF RateLimit headers (draft-ietf-httpapi-ratelimit-headers):
`RateLimit-Policy: <limit>;w=60` and `RateLimit: limit=<n>, remaining=<n>, reset=<seconds>`;
past the limit the answer is 429 with `Retry-After` (the window's end) and nothing is done.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import redis.asyncio as aioredis

from .errors import ApiError

__all__ = ["WINDOW_SECONDS", "KeyRateLimit", "RateState"]

WINDOW_SECONDS = 60
_PREFIX = "pm:api:rl:"


@dataclass(frozen=True)
class RateState:
    limit: int
    remaining: int
    reset: int
    """Seconds until the window ends."""

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Policy": f"{self.limit};w={WINDOW_SECONDS}",
            "RateLimit": (
                f"limit={self.limit}, remaining={max(0, self.remaining)}, reset={self.reset}"
            ),
        }


class KeyRateLimit:
    def __init__(self, redis: aioredis.Redis, per_minute: int) -> None:
        self._redis = redis
        self._limit = per_minute

    async def hit(self, key_id: uuid.UUID, now: float | None = None) -> RateState:
        """Count one request of the key; 429 (ApiError) past the limit."""
        now = time.time() if now is None else now
        window = int(now // WINDOW_SECONDS)
        reset = max(1, int((window + 1) * WINDOW_SECONDS - now + 0.999))
        name = f"{_PREFIX}{key_id}:{window}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(name)
            pipe.expire(name, WINDOW_SECONDS + 5, nx=True)
            count, _ = await pipe.execute()
        state = RateState(self._limit, self._limit - int(count), reset)
        if state.remaining < 0:
            raise ApiError(
                429,
                "rate_limit_error",
                "rate_limited",
                f"This API key made more than {self._limit} requests this minute: "
                f"retry in {reset} seconds.",
                headers={"Retry-After": str(reset), **state.headers()},
            )
        return state
