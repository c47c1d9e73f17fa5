"""Data kept for a retention period, then purged, never silently dropped: deleted tenants' rows,
and Stripe's processed events (billing_events) once no redelivery can come any more."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import asyncpg

from penguinmails.common.db.tenants import purge_expired_tenants

log = logging.getLogger(__name__)


async def purge_billing_events(db: asyncpg.Pool, retention: timedelta) -> int:
    """Forget processed Stripe events received longer than `retention` ago; how many.

    Only the de-duplication of redeliveries needs them; the order of a subscription's events is
    kept in billing_subscriptions, which stays."""
    deleted = await db.fetchval(
        "WITH gone AS (DELETE FROM billing_events "
        "WHERE received_at < now() - $1::interval RETURNING 1) SELECT count(*) FROM gone",
        retention,
    )
    return int(deleted or 0)


async def purge_periodically(
    db: asyncpg.Pool, interval_seconds: float, billing_event_retention: timedelta
) -> None:
    """Every `interval_seconds`, until cancelled: hard-delete tenants past their `purge_after`
    and billing events older than `billing_event_retention`."""
    while True:
        try:
            purged = await purge_expired_tenants(db)
            events = await purge_billing_events(db, billing_event_retention)
        except (asyncpg.PostgresError, OSError) as error:
            log.warning("purging expired data failed, retrying later: %s", error)
        else:
            if purged:
                log.info("purged the data of deleted tenants: %s", ", ".join(purged))
            if events:
                log.info(
                    "purged %d Stripe events processed more than %g days ago",
                    events,
                    billing_event_retention / timedelta(days=1),
                )
        await asyncio.sleep(interval_seconds)
