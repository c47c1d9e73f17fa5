"""Sign-in throttling against password guessing, in Redis (shared by every API replica).

Failures are counted per address (hashed: no e-mail address in Redis keys) and per source
address (four times the limit: an office behind one NAT). Past the limit sign-in answers 429
with Retry-After until the window ends, even for the right password, so guessing gains nothing
by continuing; a successful sign-in clears the address's count.
"""

from __future__ import annotations

import hashlib
import math

import redis.asyncio as aioredis

from .errors import ApiError

__all__ = ["SignInThrottle"]

_PREFIX = "pm:api:signin:"
_SOURCE_FACTOR = 4


class SignInThrottle:
    def __init__(self, redis: aioredis.Redis, *, failures: int, window_seconds: float) -> None:
        self._redis = redis
        self._failures = failures
        self._window = max(1, math.ceil(window_seconds))

    @staticmethod
    def _keys(email: str, source: str) -> tuple[str, str]:
        digest = hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()
        return _PREFIX + "email:" + digest, _PREFIX + "source:" + source

    async def check(self, email: str, source: str) -> None:
        """Raise 429 if either count has reached its limit."""
        email_key, source_key = self._keys(email, source)
        counts = await self._redis.mget(email_key, source_key)
        email_count = int(counts[0] or 0)
        source_count = int(counts[1] or 0)
        blocked = [
            key
            for key, count, limit in (
                (email_key, email_count, self._failures),
                (source_key, source_count, self._failures * _SOURCE_FACTOR),
            )
            if count >= limit
        ]
        if blocked:
            ttls = [int(await self._redis.ttl(key)) for key in blocked]
            retry = max([t for t in ttls if t > 0] or [self._window])
            raise ApiError(
                429,
                "rate_limit_error",
                "sign_in_throttled",
                f"Too many failed sign-ins: try again in {retry} seconds.",
                headers={"Retry-After": str(retry)},
            )

    async def failed(self, email: str, source: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            for key in self._keys(email, source):
                pipe.incr(key)
                pipe.expire(key, self._window, nx=True)
            await pipe.execute()

    async def succeeded(self, email: str, source: str) -> None:
        await self._redis.delete(self._keys(email, source)[0])
