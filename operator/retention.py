"""Deleted tenants' data is kept for the retention period, then purged, never silently dropped."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from penguinmails.common.db.tenants import purge_expired_tenants

log = logging.getLogger(__name__)


async def purge_periodically(db: asyncpg.Pool, interval_seconds: float) -> None:
    """Hard-delete tenants past their `purge_after`, every `interval_seconds`, until cancelled."""
    while True:
        try:
            purged = await purge_expired_tenants(db)
        except (asyncpg.PostgresError, OSError) as error:
            log.warning("purging expired tenants failed, retrying later: %s", error)
        else:
            if purged:
                log.info("purged the data of deleted tenants: %s", ", ".join(purged))
        await asyncio.sleep(interval_seconds)
