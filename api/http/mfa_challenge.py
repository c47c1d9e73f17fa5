"""The short-lived MFA challenge between the two steps of a sign-in, in Redis.

The password step of a user with MFA on answers an `mfa_token` (256 random bits, kept in Redis
only as its SHA-256, for `TTL_SECONDS`) instead of tokens; the second step presents it with a
code. A challenge takes `MAX_ATTEMPTS` wrong codes, then is gone (a new password step is needed,
and the sign-in throttle counts each wrong code as a failed sign-in); a right code consumes it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from dataclasses import dataclass

import redis.asyncio as aioredis

__all__ = ["MAX_ATTEMPTS", "TTL_SECONDS", "Challenge", "consume", "create", "find", "wrong"]

TTL_SECONDS = 300
MAX_ATTEMPTS = 5
_PREFIX = "pm:api:mfa:"
TOKEN_PREFIX = "pm_mfa_"  # noqa: S105 (a prefix, not a secret)


@dataclass(frozen=True)
class Challenge:
    user_id: uuid.UUID
    email: str
    """As typed at the password step: the sign-in throttle's account key."""


def _key(token: str) -> str:
    return _PREFIX + hashlib.sha256(token.encode("utf-8")).hexdigest()


async def create(redis: aioredis.Redis, user_id: uuid.UUID, email: str) -> str:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    value = json.dumps({"user": str(user_id), "email": email})
    await redis.set(_key(token), value, ex=TTL_SECONDS)
    return token


async def find(redis: aioredis.Redis, token: str) -> Challenge | None:
    raw = await redis.get(_key(token))
    if raw is None:
        return None
    data = json.loads(raw)
    return Challenge(uuid.UUID(data["user"]), str(data["email"]))


async def wrong(redis: aioredis.Redis, token: str) -> None:
    """Count a wrong code; the challenge is gone after MAX_ATTEMPTS."""
    counter = _key(token) + ":wrong"
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(counter)
        pipe.expire(counter, TTL_SECONDS, nx=True)
        count, _ = await pipe.execute()
    if int(count) >= MAX_ATTEMPTS:
        await redis.delete(_key(token), counter)


async def consume(redis: aioredis.Redis, token: str) -> bool:
    """Use the challenge up; False if another request already did (only one wins)."""
    return bool(await redis.delete(_key(token)))
