"""Plans as data: what each tier costs in Stripe and what it allows (table billing_plans).

The technical limits of a tier (quotas, object counts, sender size) stay in
api/v1alpha1/tiers.py; a plan adds what finance decides: the Stripe Prices (monthly, yearly),
the monthly allowance of messages and whether sending may go past it (billed as overage).
A tier without a plan row keeps its tier's `emails_per_month` and no overage (e.g. a tenant
managed by GitOps on a tier that is not sold).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import asyncpg

from penguinmails.api.v1alpha1.tiers import Tier, limits_for
from penguinmails.common.db import AnyConnection


class Interval(StrEnum):
    """Billing interval of a Checkout."""

    MONTHLY = "monthly"
    YEARLY = "yearly"


@dataclass(frozen=True)
class Plan:
    tier: Tier
    price_monthly: str
    price_yearly: str | None
    emails_per_month: int
    overage_allowed: bool

    def price(self, interval: Interval) -> str:
        """The Stripe Price id of `interval`; ValueError when the plan is not sold that way."""
        if interval is Interval.YEARLY:
            if self.price_yearly is None:
                raise ValueError(
                    f"interval: the {self.tier.value} plan has no yearly price; choose monthly"
                )
            return self.price_yearly
        return self.price_monthly


def _plan(row: asyncpg.Record) -> Plan:
    return Plan(
        tier=Tier(row["tier"]),
        price_monthly=row["price_monthly"],
        price_yearly=row["price_yearly"],
        emails_per_month=row["emails_per_month"],
        overage_allowed=row["overage_allowed"],
    )


async def put_plan(db: asyncpg.Pool | AnyConnection, plan: Plan) -> None:
    """Create or replace the plan of `plan.tier` (platform administrators)."""
    await db.execute(
        """
        INSERT INTO billing_plans (tier, price_monthly, price_yearly, emails_per_month,
                                   overage_allowed)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (tier) DO UPDATE SET
            price_monthly = EXCLUDED.price_monthly, price_yearly = EXCLUDED.price_yearly,
            emails_per_month = EXCLUDED.emails_per_month,
            overage_allowed = EXCLUDED.overage_allowed, updated_at = now()
        """,
        plan.tier.value,
        plan.price_monthly,
        plan.price_yearly,
        plan.emails_per_month,
        plan.overage_allowed,
    )


async def get_plan(db: asyncpg.Pool | AnyConnection, tier: Tier | str) -> Plan | None:
    row = await db.fetchrow("SELECT * FROM billing_plans WHERE tier = $1", Tier(tier).value)
    return _plan(row) if row is not None else None


async def list_plans(db: asyncpg.Pool | AnyConnection) -> list[Plan]:
    rows = await db.fetch("SELECT * FROM billing_plans ORDER BY emails_per_month")
    return [_plan(row) for row in rows]


async def plan_for_price(db: asyncpg.Pool | AnyConnection, price_id: str) -> Plan | None:
    """The plan sold at `price_id` (monthly or yearly); None for a price of no plan."""
    row = await db.fetchrow(
        "SELECT * FROM billing_plans WHERE price_monthly = $1 OR price_yearly = $1", price_id
    )
    return _plan(row) if row is not None else None


@dataclass(frozen=True)
class Allowance:
    """What a tenant may send this month and what happens past it."""

    emails_per_month: int
    overage_allowed: bool


async def allowance_for(db: asyncpg.Pool | AnyConnection, tier: Tier | str) -> Allowance:
    """The plan's allowance, or the tier's `emails_per_month` without overage when no plan."""
    plan = await get_plan(db, tier)
    if plan is None:
        return Allowance(limits_for(tier).emails_per_month, overage_allowed=False)
    return Allowance(plan.emails_per_month, plan.overage_allowed)
