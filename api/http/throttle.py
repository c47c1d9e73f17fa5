"""Sign-in throttling against password (and MFA code) guessing, in Redis (shared by every API
replica). Failures are counted in fixed windows (`window_seconds`, from the first failure; later
failures do not extend it), with the account's address hashed (no e-mail address in Redis):

- per account and source address: `failures` (N) failures, then 429 for that pair;
- per source address, any accounts: 4 N (an office behind one NAT), then 429 for that source;
- per account, any sources: 10 N (guessing spread over many addresses), then 429 for every
  source that has itself failed on that account in the window. A source without a failure on
  it still gets its attempts: the owner signing in from their own address gets in, while each
  new address of an attacker gets one guess per window before it is blocked too.

So an attacker can neither lock a user out from the user's own address (only that address's
own failures block it, and for one window at most), nor guess more than 10 N times per window
against one account plus one per further address. A successful sign-in clears its pair count.
"""

from __future__ import annotations

import hashlib
import math

import redis.asyncio as aioredis

from .errors import ApiError
from .services import Services

__all__ = ["ACCOUNT_FACTOR", "SOURCE_FACTOR", "SignInThrottle", "sign_in_throttle"]

_PREFIX = "pm:api:signin:"
SOURCE_FACTOR = 4
ACCOUNT_FACTOR = 10


class SignInThrottle:
    def __init__(self, redis: aioredis.Redis, *, failures: int, window_seconds: float) -> None:
        self._redis = redis
        self._failures = failures
        self._window = max(1, math.ceil(window_seconds))

    @staticmethod
    def _keys(email: str, source: str) -> tuple[str, str, str]:
        """(pair, source, account) keys."""
        digest = hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()
        return (
            f"{_PREFIX}pair:{digest}:{source}",
            f"{_PREFIX}source:{source}",
            f"{_PREFIX}email:{digest}",
        )

    async def check(self, email: str, source: str) -> None:
        """Raise 429 if this attempt is over one of the limits (see the module doc)."""
        keys = self._keys(email, source)
        pair, by_source, by_account = (int(c or 0) for c in await self._redis.mget(*keys))
        blocked = []
        if pair >= self._failures:
            blocked.append(keys[0])
        if by_source >= self._failures * SOURCE_FACTOR:
            blocked.append(keys[1])
        if by_account >= self._failures * ACCOUNT_FACTOR and pair > 0:
            blocked.append(keys[2])
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


def sign_in_throttle(svc: Services) -> SignInThrottle:
    """The throttle with the API's settings (PM_API_SIGNIN_FAILURES, ..._WINDOW_SECONDS)."""
    return SignInThrottle(
        svc.redis,
        failures=svc.settings.sign_in_failures,
        window_seconds=svc.settings.sign_in_window.total_seconds(),
    )
