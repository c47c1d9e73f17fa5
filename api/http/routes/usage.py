"""This month's sending against the tier's allowance, for every member (viewer and up) and API
keys with `campaigns:read`.

`emailsSent` is counted live from the delivery ledger, by the same function the operator
writes into the Tenant's `status.emailsSentThisMonth` (`operator/usage.py`, messages sent
since the 1st, 00:00 UTC), so it is never behind the operator's last pass. The allowance is the
plan's (`api/billing/plans.py`) when billing is on, else the tier's `emails_per_month`
(`api/v1alpha1/tiers.py`), which is what the Campaign gate applies without a plan."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import Field

from penguinmails.api.billing.plans import Allowance, allowance_for
from penguinmails.api.v1alpha1.tiers import Tier, limits_for
from penguinmails.operator.usage import month_start, month_usage

from ..auth import Access, Resource, TenantAccess, tenant_access
from ..errors import ErrorResponse
from ..models import ApiModel
from ..services import Services, services

router = APIRouter(tags=["usage"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 429)
}


class Usage(ApiModel):
    period_start: datetime = Field(description="The 1st of the month, 00:00 UTC.")
    tier: Tier
    emails_sent: int = Field(description="Messages sent since `periodStart` (the ledger).")
    emails_per_month: int = Field(description="The monthly allowance.")
    overage_allowed: bool = Field(description="Whether sending goes on past the allowance.")
    percent_used: float


@router.get("/tenants/{tenant}/usage", responses=_ERRORS, summary="This month's sending")
async def usage(
    request: Request,
    access: Annotated[TenantAccess, tenant_access(Resource.CAMPAIGNS, Access.READ)],
    svc: Annotated[Services, Depends(services)],
) -> Usage:
    now = datetime.now(UTC)
    tier = Tier(await svc.pool.fetchval("SELECT tier FROM tenants WHERE id = $1", access.tenant.id))
    billing = getattr(request.app.state, "billing", None)
    if billing is not None:  # plans live in billing's tables, read with billing's login
        allowance = await allowance_for(billing.pool, tier)
    else:
        allowance = Allowance(limits_for(tier).emails_per_month, overage_allowed=False)
    sent = await month_usage(svc.pool, access.tenant.id, now)
    return Usage(
        period_start=month_start(now),
        tier=tier,
        emails_sent=sent,
        emails_per_month=allowance.emails_per_month,
        overage_allowed=allowance.overage_allowed,
        percent_used=round(100 * sent / allowance.emails_per_month, 2),
    )
