"""A tenant's deliveries per day (sent, delivered, bounced, complaints, replies), the series the
dashboard's overview draws: for every member (viewer and up) and API keys with
`campaigns:read`, read from the delivery ledger under the tenant's scope with the API's own
database login (common/db/delivery_stats.py says what each figure counts)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import Field

from penguinmails.common.db.delivery_stats import daily_counts

from ..auth import Access, Resource, TenantAccess, tenant_access
from ..errors import ApiError, ErrorResponse
from ..models import ApiModel
from ..services import Services, services

__all__ = ["DEFAULT_DAYS", "EARLIEST", "MAX_DAYS", "router"]

router = APIRouter(tags=["usage"])

DEFAULT_DAYS = 30
MAX_DAYS = 366
"""A year and a day: enough for any chart, and a bounded query (one row per day)."""
EARLIEST = date(2000, 1, 1)
"""No delivery is older; also keeps date arithmetic clear of `date.min`."""

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 429)
}


class DeliveryDay(ApiModel):
    day: date = Field(description="A UTC calendar day.")
    sent: int = Field(description="Messages the relay accepted that day (bounced later or not).")
    delivered: int = Field(description="Of those, the ones no bounce has come back for.")
    bounced: int = Field(description="Deliveries that bounced that day.")
    complaints: int = Field(description="Complaints received that day.")
    replies: int = Field(
        description="Deliveries first replied to that day (auto-replies are not counted)."
    )


class DeliveryDays(ApiModel):
    since: date
    until: date
    data: list[DeliveryDay] = Field(description="One item per day, oldest first; zeros included.")


@router.get(
    "/tenants/{tenant}/deliveries/daily",
    responses=_ERRORS,
    summary="Sent, delivered, bounced, complaints and replies per day",
)
async def deliveries_daily(
    access: Annotated[TenantAccess, tenant_access(Resource.CAMPAIGNS, Access.READ)],
    svc: Annotated[Services, Depends(services)],
    since: Annotated[
        date | None,
        Query(
            description=f"First day (UTC, inclusive); default {DEFAULT_DAYS - 1} days before "
            "`until`."
        ),
    ] = None,
    until: Annotated[
        date | None, Query(description="Last day (UTC, inclusive); default today.")
    ] = None,
) -> DeliveryDays:
    today = datetime.now(UTC).date()
    last = until or today
    for given, param in ((since, "since"), (until, "until")):
        if given is not None and given < EARLIEST:
            raise ApiError.invalid(f"{param} must be {EARLIEST} or later.", param)
    if last > today + timedelta(days=MAX_DAYS):
        raise ApiError.invalid(
            f"until ({last}) is more than {MAX_DAYS} days ahead: nothing is sent there yet.",
            "until",
        )
    first = since or last - timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise ApiError.invalid(
            f"since ({first}) is after until ({last}): give an earlier `since`.", "since"
        )
    if (last - first).days + 1 > MAX_DAYS:
        raise ApiError.invalid(
            f"since..until spans {(last - first).days + 1} days; at most {MAX_DAYS} at a time: "
            "ask for a shorter range.",
            "since",
        )
    days = await daily_counts(svc.pool, access.tenant.id, first, last)
    return DeliveryDays(
        since=first,
        until=last,
        data=[
            DeliveryDay(
                day=d.day,
                sent=d.sent,
                delivered=d.delivered,
                bounced=d.bounced,
                complaints=d.complaints,
                replies=d.replies,
            )
            for d in days
        ],
    )
