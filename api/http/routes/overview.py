"""The dashboard's overview in one request: the per-day series, this month's usage, and the
Ready condition of every sending domain and SMTP server of the tenant.

One request rather than four: each of them would be authenticated on its own (token, tenant,
membership), and the resource lists would carry every object's full spec and status (DNS
records, keys, probes) to show a name and a badge. Here the four reads run concurrently and
the answer holds only what the page shows. For API keys it needs the read scopes of the three
resources it shows (campaigns, domains, smtp_servers)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from kubernetes.client.exceptions import ApiException
from pydantic import Field

from penguinmails.api.v1alpha1 import SendingDomain, SmtpServer
from penguinmails.api.v1alpha1.common import Condition

from ..auth import Access, Resource, TenantAccess, tenant_access
from ..errors import ApiError, ErrorResponse
from ..kube import kube_error
from ..models import ApiModel
from ..services import Services, services
from .delivery_days import DeliveryDays, deliveries_daily
from .usage import Usage, usage

__all__ = ["router"]

router = APIRouter(tags=["usage"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 429)
}
_PAGE = 500


class Health(ApiModel):
    name: str
    ready: Condition | None = Field(
        default=None, description="The operator's Ready condition; null until it has seen it."
    )


class Overview(ApiModel):
    deliveries: DeliveryDays = Field(description="The last 30 days, as deliveries/daily.")
    usage: Usage
    sending_domains: list[Health]
    smtp_servers: list[Health]


async def _health(svc: Services, namespace: str, plural: str) -> list[Health]:
    found: list[Health] = []
    cont: str | None = None
    while True:
        try:
            items, cont = await svc.kube.list(namespace, plural, limit=_PAGE, cont=cont)
        except ApiException as error:
            raise kube_error(error, plural) from error
        for item in items:
            conditions = (item.get("status") or {}).get("conditions") or []
            ready = next((c for c in conditions if c.get("type") == "Ready"), None)
            found.append(
                Health(
                    name=str((item.get("metadata") or {}).get("name")),
                    ready=Condition.model_validate(ready) if ready else None,
                )
            )
        if cont is None:
            return found


@router.get(
    "/tenants/{tenant}/overview",
    responses=_ERRORS,
    summary="The dashboard's overview: deliveries per day, usage, health of domains and servers",
)
async def overview(
    request: Request,
    access: Annotated[TenantAccess, tenant_access(Resource.CAMPAIGNS, Access.READ)],
    svc: Annotated[Services, Depends(services)],
) -> Overview:
    key = access.caller.api_key
    if key is not None:
        for resource in (Resource.DOMAINS, Resource.SMTP_SERVERS):
            if not {f"{resource.value}:read", f"{resource.value}:write"} & set(key.scopes):
                raise ApiError.forbidden(
                    f"This API key lacks the scope {resource.value}:read.", "scope_missing"
                )
    namespace = access.tenant.namespace
    series, used, domains, servers = await asyncio.gather(
        deliveries_daily(access, svc),
        usage(request, access, svc),
        _health(svc, namespace, SendingDomain.resource_info.plural),
        _health(svc, namespace, SmtpServer.resource_info.plural),
    )
    return Overview(deliveries=series, usage=used, sending_domains=domains, smtp_servers=servers)
