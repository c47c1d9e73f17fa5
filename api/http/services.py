"""What every request handler shares: the settings, the API's database pool, Redis, and the
Kubernetes client, created by the app's lifespan and reached through `services(request)`."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis
from fastapi import Request

from .config import ApiSettings
from .kube import CustomObjects

__all__ = ["Services", "services"]


@dataclass(frozen=True)
class Services:
    settings: ApiSettings
    pool: asyncpg.Pool
    redis: aioredis.Redis
    kube: CustomObjects


async def services(request: Request) -> Services:
    found = request.app.state.services
    assert isinstance(found, Services)
    return found
