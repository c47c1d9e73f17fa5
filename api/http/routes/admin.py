"""Platform administrators' endpoints under /v1/admin: every tenant (tier, suspension, usage),
suspend and resume with a reason, change a tier, the billing plans (issue 13's "plans
editable by platform administrators"), the deliveries waiting per tenant and per server
(queues), and every SMTP server with its health across tenants (infrastructure).

A platform administrator is a user whose `platform_admin` flag the platform's own database
login set (`python -m penguinmails.api.http platform-admin <email>`); the API's login cannot
set it (migration 0010), and every other caller gets 403 here.

Tenants are changed through the API server like any other client (JSON merge patch of the
Tenant's spec under the field manager `penguinmails-admin`, conditional on the resourceVersion
read, retried on a conflict), as billing does (api/billing/tenants.py); the operator does the
rest (senders to zero when suspended, quotas of the tier). The queues are read from each
tenant's delivery ledger with the API's database login, a platform login (member of
penguinmails_platform) that opens one tenant's scope after another
(common/db/delivery_stats.py); the servers are the SmtpServer resources of every namespace,
as the operator's status describes them (the API's ClusterRole lists them).

A suspension reason never starts with billing's prefix, so a payment never lifts an
administrator's suspension. Every write is recorded in the platform audit log and, for a
tenant, in the tenant's own audit log.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Path, Request
from kubernetes.client.exceptions import ApiException
from pydantic import Field, field_validator

from penguinmails.api.billing import plans
from penguinmails.api.billing.plans import Plan
from penguinmails.api.billing.tenants import SUSPEND_PREFIX
from penguinmails.api.v1alpha1.smtpserver import SmtpServerStatus
from penguinmails.api.v1alpha1.tiers import Tier
from penguinmails.common.db import accounts
from penguinmails.common.db.delivery_stats import waiting_deliveries

from ..auth import Caller, platform_admin
from ..errors import ApiError, ErrorResponse
from ..kube import ClusterObjects, kube_error
from ..models import ApiModel
from ..pagination import Page, PageParams, page_params
from ..platform_audit import record_in_tenant, record_platform
from ..services import Services, services

__all__ = ["FIELD_MANAGER", "router"]

router = APIRouter(prefix="/admin", tags=["admin"])

FIELD_MANAGER = "penguinmails-admin"
_ATTEMPTS = 5
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 429)
}
Admin = Annotated[Caller, Depends(platform_admin)]
Svc = Annotated[Services, Depends(services)]
TenantName = Annotated[
    str,
    Path(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
]


class AdminTenant(ApiModel):
    name: str
    tier: str | None
    suspended: bool
    suspend_reason: str | None = None
    emails_sent_this_month: int | None = Field(
        default=None, description="Usage this calendar month (the Tenant's status)."
    )
    billing_managed: bool = Field(description="Paid through a Stripe subscription.")
    created_at: datetime | None = None


class Suspension(ApiModel):
    reason: str = Field(
        min_length=3,
        max_length=200,
        description="Why, shown to the customer (one line).",
    )

    @field_validator("reason")
    @classmethod
    def _ours(cls, reason: str) -> str:
        if "\n" in reason or "\r" in reason:
            raise ValueError("one line, please")
        if reason.startswith(SUSPEND_PREFIX):
            raise ValueError(
                f"must not start with {SUSPEND_PREFIX!r}: that prefix marks billing's "
                "suspensions, which a payment lifts"
            )
        return reason


class TierChange(ApiModel):
    tier: Tier = Field(description="starter, professional, business or enterprise.")


class PlanIn(ApiModel):
    price_monthly: str = Field(pattern=r"^price_[A-Za-z0-9_]+$", max_length=255)
    price_yearly: str | None = Field(default=None, pattern=r"^price_[A-Za-z0-9_]+$", max_length=255)
    emails_per_month: int = Field(gt=0, le=2_000_000_000)
    overage_allowed: bool = False


class PlanOut(PlanIn):
    tier: Tier


class PlanList(ApiModel):
    data: list[PlanOut]


class ServerQueue(ApiModel):
    server: str | None = Field(
        description="The SmtpServer a deferred delivery was last handed to; null for "
        "deliveries no server has had yet (the sender picks one when it claims them)."
    )
    queued: int
    deferred: int = Field(description="Waiting for a retry after a temporary failure.")
    sending: int = Field(description="Claimed by a sender, outcome not recorded yet.")
    next_due: datetime | None = Field(description="When the next queued or deferred one is due.")


class TenantQueue(ApiModel):
    tenant: str
    queued: int
    deferred: int
    sending: int
    next_due: datetime | None
    servers: list[ServerQueue] = Field(description="The same, per server.")


class QueueList(ApiModel):
    data: list[TenantQueue] = Field(description="Every live tenant, by name, idle ones too.")


class AdminSmtpServer(ApiModel):
    tenant: str | None = Field(description="The tenant whose namespace holds it.")
    namespace: str
    name: str
    hostname: str | None = None
    status: SmtpServerStatus | None = Field(
        default=None, description="The operator's view: phase, conditions, last probe, warm-up."
    )


def _tenant(obj: dict[str, Any]) -> AdminTenant:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    meta = obj.get("metadata") or {}
    created = meta.get("creationTimestamp")
    return AdminTenant(
        name=str(meta.get("name")),
        tier=spec.get("tier"),
        suspended=bool(spec.get("suspended")),
        suspend_reason=spec.get("suspendReason"),
        emails_sent_this_month=status.get("emailsSentThisMonth"),
        billing_managed=bool((spec.get("billing") or {}).get("stripeSubscriptionId")),
        created_at=datetime.fromisoformat(created) if isinstance(created, str) else None,
    )


def _plan(plan: Plan) -> PlanOut:
    return PlanOut(
        tier=plan.tier,
        price_monthly=plan.price_monthly,
        price_yearly=plan.price_yearly,
        emails_per_month=plan.emails_per_month,
        overage_allowed=plan.overage_allowed,
    )


def _admin_id(who: Caller) -> uuid.UUID:
    assert who.user_id is not None
    return who.user_id


@router.get("/tenants", responses=_ERRORS, summary="Every tenant: tier, suspension, usage")
async def list_tenants(
    who: Admin, svc: Svc, page: Annotated[PageParams, Depends(page_params)]
) -> Page[AdminTenant]:
    try:
        items, cont = await ClusterObjects(svc.kube).list(
            "tenants", limit=page.limit, cont=page.cursor
        )
    except ApiException as error:
        raise kube_error(error, "tenants") from error
    return Page[AdminTenant](
        data=[_tenant(i) for i in items], has_more=cont is not None, next_cursor=cont
    )


async def _change(
    svc: Svc, request: Request, who: Caller, name: str, action: str, changes: dict[str, Any]
) -> AdminTenant:
    """Apply `changes` to the Tenant's spec (conditional on what was read, retried on a
    conflict); audited in the platform's and the tenant's logs."""
    tenants = ClusterObjects(svc.kube)
    for attempt in range(_ATTEMPTS):
        try:
            current = await tenants.get("tenants", name)
            patch = {
                "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
                "spec": changes,
            }
            updated = await tenants.merge_patch("tenants", name, patch, field_manager=FIELD_MANAGER)
            break
        except ApiException as error:
            if error.status == 409 and attempt < _ATTEMPTS - 1:
                continue
            raise kube_error(error, "tenant") from error
    else:  # pragma: no cover (the loop breaks or raises)
        raise AssertionError("unreachable")
    user_id = _admin_id(who)
    details = {k: v for k, v in changes.items() if k != "suspendReason"}
    await record_platform(svc, request, user_id, action, f"tenant:{name}", details)
    found = await accounts.tenant_by_name(svc.pool, name)
    if found is not None:
        await record_in_tenant(svc, request, found.id, user_id, action, f"tenant:{name}")
    return _tenant(updated)


@router.post(
    "/tenants/{tenant}/suspend",
    responses=_ERRORS,
    summary="Suspend a tenant (senders stop; reads only) with a reason the customer sees",
)
async def suspend(
    tenant: TenantName, body: Suspension, who: Admin, svc: Svc, request: Request
) -> AdminTenant:
    changes = {"suspended": True, "suspendReason": body.reason}
    return await _change(svc, request, who, tenant, "tenant.suspend", changes)


@router.post("/tenants/{tenant}/resume", responses=_ERRORS, summary="Lift a suspension")
async def resume(tenant: TenantName, who: Admin, svc: Svc, request: Request) -> AdminTenant:
    changes = {"suspended": False, "suspendReason": None}
    return await _change(svc, request, who, tenant, "tenant.resume", changes)


@router.patch("/tenants/{tenant}", responses=_ERRORS, summary="Change a tenant's tier")
async def change_tier(
    tenant: TenantName, body: TierChange, who: Admin, svc: Svc, request: Request
) -> AdminTenant:
    changes = {"tier": body.tier.value}
    return await _change(svc, request, who, tenant, "tenant.change_tier", changes)


@router.get("/plans", responses=_ERRORS, summary="The billing plans")
async def list_plans(who: Admin, svc: Svc) -> PlanList:
    return PlanList(data=[_plan(p) for p in await plans.list_plans(svc.pool)])


@router.put("/plans/{tier}", responses=_ERRORS, summary="Create or replace a tier's plan")
async def put_plan(tier: Tier, body: PlanIn, who: Admin, svc: Svc, request: Request) -> PlanOut:
    plan = Plan(
        tier=tier,
        price_monthly=body.price_monthly,
        price_yearly=body.price_yearly,
        emails_per_month=body.emails_per_month,
        overage_allowed=body.overage_allowed,
    )
    try:
        await plans.put_plan(svc.pool, plan)
    except asyncpg.UniqueViolationError as error:
        raise ApiError(
            409,
            "conflict_error",
            "price_in_use",
            "That Stripe Price is already another tier's plan.",
            param="priceMonthly",
        ) from error
    await record_platform(
        svc, request, _admin_id(who), "plan.put", f"plan:{tier.value}", body.model_dump()
    )
    return _plan(plan)


@router.get("/queues", responses=_ERRORS, summary="Deliveries waiting, per tenant and per server")
async def list_queues(who: Admin, svc: Svc) -> QueueList:
    return QueueList(
        data=[
            TenantQueue(
                tenant=t.tenant,
                queued=t.queued,
                deferred=t.deferred,
                sending=t.sending,
                next_due=t.next_due,
                servers=[
                    ServerQueue(
                        server=s.server,
                        queued=s.queued,
                        deferred=s.deferred,
                        sending=s.sending,
                        next_due=s.next_due,
                    )
                    for s in t.servers
                ],
            )
            for t in await waiting_deliveries(svc.pool)
        ]
    )


@router.get(
    "/smtp-servers",
    responses=_ERRORS,
    summary="Every SMTP server of every tenant and its health",
)
async def list_smtp_servers(
    who: Admin, svc: Svc, page: Annotated[PageParams, Depends(page_params)]
) -> Page[AdminSmtpServer]:
    try:
        items, cont = await ClusterObjects(svc.kube).list(
            "smtpservers", limit=page.limit, cont=page.cursor
        )
    except ApiException as error:
        raise kube_error(error, "SMTP servers") from error
    tenants = {
        r["namespace"]: r["name"]
        for r in await svc.pool.fetch(
            "SELECT name, namespace FROM tenants WHERE deleted_at IS NULL"
        )
    }
    return Page[AdminSmtpServer](
        data=[_server(i, tenants) for i in items], has_more=cont is not None, next_cursor=cont
    )


def _server(obj: dict[str, Any], tenants: dict[str, str]) -> AdminSmtpServer:
    meta = obj.get("metadata") or {}
    namespace = str(meta.get("namespace"))
    status = obj.get("status")
    return AdminSmtpServer(
        tenant=tenants.get(namespace),
        namespace=namespace,
        name=str(meta.get("name")),
        hostname=(obj.get("spec") or {}).get("hostname"),
        status=SmtpServerStatus.model_validate(status) if status else None,
    )
