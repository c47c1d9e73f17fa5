"""Usage per calendar month: counted from the delivery ledger, reported to Stripe past the plan.

The Tenant controller calls `month_usage` on every pass (one aggregate query over the tenant's
messages sent since the 1st, UTC, on the index of migration 0007) and writes the count into
`status.emailsSentThisMonth`, which the Campaign gate reads (operator/campaign.py). When the
tenant's plan allows overage, `report_overage` sends what lies past the allowance to Stripe's
meter in batches: each batch is recorded before it is sent and carries an identifier naming
its bounds, so a retry after a crash sends the same batch again and Stripe counts it once.
Without PM_STRIPE_API_KEY no report is made (a platform that does not bill).
"""

from __future__ import annotations

import functools
import uuid
from datetime import UTC, date, datetime

import asyncpg
from stripe import StripeClient

from penguinmails.api.billing.client import stripe_client
from penguinmails.common.db import tenant_connection
from penguinmails.common.settings import StripeSettings


def month_start(now: datetime) -> datetime:
    """00:00 UTC on the 1st of `now`'s month: the start of the period usage counts from."""
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def month_usage(db: asyncpg.Pool, tenant_id: uuid.UUID, now: datetime) -> int:
    """Messages of the tenant sent since the start of `now`'s month (bounced later included:
    they were sent)."""
    async with tenant_connection(db, tenant_id) as conn:
        count = await conn.fetchval(
            "SELECT count(*) FROM deliveries WHERE sent_at >= $1", month_start(now)
        )
    return int(count or 0)


@functools.cache
def _stripe() -> tuple[StripeClient, StripeSettings] | None:
    if not StripeSettings.configured():
        return None
    settings = StripeSettings.from_env(webhook=False)
    return stripe_client(settings), settings


def batch_identifier(tenant: str, period: date, start: int, end: int) -> str:
    """Stripe's dedup key of one batch: the same bounds always name the same batch."""
    return f"{tenant}-{period:%Y-%m}-{start}-{end}"


async def report_overage(
    db: asyncpg.Pool, *, tenant: str, customer_id: str, overage: int, period: date
) -> int:
    """Send the overage not yet reported for `period`; the number of messages it reported."""
    configured = _stripe()
    if configured is None or overage <= 0:
        return 0
    stripe, settings = configured
    async with db.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO billing_usage_reports (tenant, period) VALUES ($1, $2) "
            "ON CONFLICT DO NOTHING",
            tenant,
            period,
        )
        row = await conn.fetchrow(
            "SELECT reported_up_to, pending_up_to FROM billing_usage_reports "
            "WHERE tenant = $1 AND period = $2 FOR UPDATE",
            tenant,
            period,
        )
        assert row is not None
        start, end = int(row["reported_up_to"]), row["pending_up_to"]
        if end is None:
            if overage <= start:
                return 0
            end = overage
            await conn.execute(
                "UPDATE billing_usage_reports SET pending_up_to = $3 "
                "WHERE tenant = $1 AND period = $2",
                tenant,
                period,
                end,
            )
    await stripe.v1.billing.meter_events.create_async(
        {
            "event_name": settings.meter_event_name,
            "identifier": batch_identifier(tenant, period, start, int(end)),
            "payload": {"stripe_customer_id": customer_id, "value": str(int(end) - start)},
        }
    )
    await db.execute(
        "UPDATE billing_usage_reports SET reported_up_to = $3, pending_up_to = NULL "
        "WHERE tenant = $1 AND period = $2 AND pending_up_to = $3",
        tenant,
        period,
        end,
    )
    return int(end) - start
