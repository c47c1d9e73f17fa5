"""What every request handler shares: the settings, the signing keys, the API's database pool,
Redis and the Kubernetes client, created by the app's lifespan and reached through
`services(request)`."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis
from fastapi import Request

from penguinmails.common.settings import ApiSettings

from .kube import CustomObjects
from .tokens import SigningKeyRing

__all__ = ["Services", "services"]


@dataclass(frozen=True)
class Services:
    settings: ApiSettings
    signing_keys: SigningKeyRing
    """The access tokens' keys, parsed from `settings.signing_keys`."""
    pool: asyncpg.Pool
    redis: aioredis.Redis
    kube: CustomObjects


async def services(request: Request) -> Services:
    found = request.app.state.services
    assert isinstance(found, Services)
    return found
