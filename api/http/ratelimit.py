"""Request rate limits in Redis (shared by every API replica): per source address, and per API
key or sign-in at the rate of the tenant's tier.

Two limits, each a fixed window of one minute: `INCR` of `pm:api:rl:<subject>:<minute>`,
expiring with the window. Simple and exact within a window; across a window's edge a client can
send up to twice the limit in a short burst, which a per-minute allowance tolerates.

- **per source address** (`SourceRateLimit`, a middleware in front of every route under `/v1`
  but the Stripe webhook): `PM_API_SOURCE_REQUESTS_PER_MINUTE` for each client address,
  signed in or not, counted before anything else is done (so a flood of bad credentials costs
  one Redis round trip each). The address is the connection's peer, or, only when that peer is
  one of `PM_API_TRUSTED_PROXIES`, the nearest untrusted address of `X-Forwarded-For` (uvicorn
  rewrites it before the app sees it: `__main__.py`); a client's own `X-Forwarded-For` is never
  believed by default. IPv6 clients count per /64, the block one subscriber gets, so that
  rotating through one's own addresses does not multiply the allowance;
- **per API key** (every request made with it) and **per sign-in and tenant** (the requests of
  a user's access token under `/v1/tenants/{tenant}`): `PM_API_KEY_REQUESTS_PER_MINUTE` times
  the tenant's tier's `api_rate_factor` (api/v1alpha1/tiers.py: enterprise gets ten times
  starter's).

Every answer a limit counted carries the IETF RateLimit headers
(draft-ietf-httpapi-ratelimit-headers) of the limit nearest exhaustion:
`RateLimit-Policy: <limit>;w=60` and `RateLimit: limit=<n>, remaining=<n>, reset=<seconds>`;
past a limit the answer is 429 `rate_limited` with `Retry-After` (the window's end) and nothing
is done. The unsubscribe pages (`/u/...`, outside `/v1`) are not limited: mail providers post
one-click unsubscribes for many recipients from few addresses, and an unsubscribe must never be
refused.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from starlette.types import ASGIApp, Receive, Scope, Send

from penguinmails.api.billing.webhook_route import WEBHOOK_PATH
from penguinmails.api.v1alpha1.tiers import limits_for

from .errors import ApiError, error_response

__all__ = [
    "WINDOW_SECONDS",
    "RateLimit",
    "RateState",
    "SourceRateLimit",
    "keep_tightest",
    "rate_limited",
    "source_subject",
    "tier_rate",
]

WINDOW_SECONDS = 60
_PREFIX = "pm:api:rl:"
_UNLIMITED_PATHS = frozenset({WEBHOOK_PATH})
"""Stripe's webhook comes from Stripe's few addresses, signed; its retries are Stripe's."""


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


def keep_tightest(scope: Scope, found: RateState) -> None:
    """Keep in the request's state (`request.state.rate_limit`) the limit nearest exhaustion:
    the app's middleware puts its headers on the answer."""
    state = scope.setdefault("state", {})
    held: RateState | None = state.get("rate_limit")
    if held is None or found.remaining < held.remaining:
        state["rate_limit"] = found


def rate_limited(path: str) -> bool:
    """Whether requests to `path` count against their source address."""
    return path.startswith("/v1/") and path not in _UNLIMITED_PATHS


def tier_rate(per_minute: int, tier: str) -> int:
    """Requests per minute of one API key or sign-in in a tenant of `tier`."""
    return per_minute * limits_for(tier).api_rate_factor


def source_subject(host: str) -> str:
    """What a client address is counted as: an IPv4 address itself, an IPv6 address's /64,
    anything else (a unix socket's name) hashed, so no text of the client's reaches a key."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "source:x" + hashlib.sha256(host.encode("utf-8", "replace")).hexdigest()[:32]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return f"source:{address.ipv4_mapped}"
        return f"source:{ipaddress.IPv6Network((address, 64), strict=False)}"
    return f"source:{address}"


class RateLimit:
    def __init__(self, redis: aioredis.Redis, per_minute: int) -> None:
        self._redis = redis
        self._limit = per_minute

    async def hit(self, scope: Scope, subject: str, what: str, now: float | None = None) -> None:
        """Count one request of `subject` (`what` in the 429's message: "This API key") and
        keep its state for the headers; 429 (ApiError) past the limit."""
        now = time.time() if now is None else now
        window = int(now // WINDOW_SECONDS)
        reset = max(1, int((window + 1) * WINDOW_SECONDS - now + 0.999))
        name = f"{_PREFIX}{subject}:{window}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(name)
            pipe.expire(name, WINDOW_SECONDS + 5, nx=True)
            count, _ = await pipe.execute()
        state = RateState(self._limit, self._limit - int(count), reset)
        keep_tightest(scope, state)  # an exceeded limit is the tightest: its headers go out
        if state.remaining < 0:
            raise ApiError(
                429,
                "rate_limit_error",
                "rate_limited",
                f"{what} made more than {self._limit} requests this minute: "
                f"retry in {reset} seconds.",
                headers={"Retry-After": str(reset), **state.headers()},
            )


class SourceRateLimit:
    """The per-source-address limit, in front of every route under /v1 (a pure ASGI
    middleware: it needs no body, and a refused request never reaches a route)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not rate_limited(scope.get("path", ""))
            or scope.get("client") is None
        ):
            await self.app(scope, receive, send)
            return
        svc = scope["app"].state.services
        limiter = RateLimit(svc.redis, svc.settings.source_requests_per_minute)
        try:
            await limiter.hit(scope, source_subject(scope["client"][0]), "This address")
        except ApiError as refused:
            await error_response(refused)(scope, receive, send)
            return
        await self.app(scope, receive, send)
