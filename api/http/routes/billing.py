"""Billing: a tenant's plan, Checkout, the Customer Portal, plan changes, invoices and usage.

Mounted only when billing is on (PM_STRIPE_API_KEY set); `running()` then also serves Stripe's
webhook (`api/billing/webhook_route.py`). Every call to Stripe is one of `api/billing/flows.py`.
Users only (an API key can neither spend money nor see invoices): viewers and above read,
admins and owners change; a suspended tenant may still pay (docs/api.md, docs/billing.md).

The billing tables (`billing_plans`, `billing_events`, ...) belong to the platform's login, not
to the API's (`penguinmails_api` has no grant on them), so billing has its own pool on
PM_BILLING_DATABASE_URL. The Tenant (its `spec.billing`, `spec.tier`, `status.emailsSentThisMonth`)
is read through the API server with the API's identity (chart RBAC: get, patch on tenants).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
import stripe as stripe_errors
from fastapi import APIRouter, Depends, FastAPI, Header, Request
from pydantic import Field
from stripe import StripeClient

from penguinmails.api.billing import flows, plans
from penguinmails.api.billing.client import stripe_client
from penguinmails.api.billing.plans import Interval, Plan
from penguinmails.api.billing.tenants import TenantWriter
from penguinmails.api.billing.webhook_route import Billing, webhook_router
from penguinmails.api.v1alpha1.tiers import Tier
from penguinmails.common.settings import ApiSettings, StripeSettings

from ..auth import Access, Caller, Resource, TenantAccess, caller, tenant_access
from ..errors import ApiError
from ..kube import api_client
from ..models import ApiModel
from .custom import ERRORS

__all__ = ["BillingServices", "router", "running"]

log = logging.getLogger(__name__)

router = APIRouter(tags=["billing"])
_PATH = "/tenants/{tenant}/billing"
_READ = tenant_access(Resource.BILLING, Access.READ)
_WRITE = tenant_access(Resource.BILLING, Access.WRITE)


@dataclass(frozen=True)
class BillingServices:
    webhook: Billing
    stripe: StripeClient

    @property
    def settings(self) -> StripeSettings:
        return self.webhook.settings

    @property
    def pool(self) -> asyncpg.Pool:
        return self.webhook.pool

    @property
    def tenants(self) -> TenantWriter:
        return self.webhook.tenants


@contextlib.asynccontextmanager
async def running(app: FastAPI, settings: ApiSettings) -> AsyncIterator[None]:
    """Billing's pool, clients and Stripe's webhook, for the app's lifespan (billing on)."""
    stripe = StripeSettings.from_env()
    pool = await asyncpg.create_pool(settings.billing_database_url, min_size=1, max_size=4)
    kube = api_client(settings.kubeconfig)
    try:
        billing = BillingServices(Billing(pool, TenantWriter(kube), stripe), stripe_client(stripe))
        app.state.billing = billing
        webhook = webhook_router(billing.webhook)
        # Mounted here because it needs the pool; Starlette looks routes up per request. First,
        # not last: the dashboard's mount at / (added by create_app) would match it before.
        app.router.routes[0:0] = webhook.routes
        async with webhook.lifespan_context(app):
            yield
    finally:
        kube.close()
        await pool.close()


def _billing(request: Request) -> BillingServices:
    found = request.app.state.billing
    assert isinstance(found, BillingServices)
    return found


Svc = Annotated[BillingServices, Depends(_billing)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", include_in_schema=False)]


@contextlib.contextmanager
def _stripe_errors() -> Iterator[None]:
    """Stripe's refusals in the API's envelope; its message never holds the key."""
    try:
        yield
    except stripe_errors.InvalidRequestError as error:
        raise ApiError.invalid(
            f"Stripe refused the request: {error.user_message or 'invalid request'}",
            error.param,
            "billing_refused",
        ) from error
    except stripe_errors.StripeError as error:
        # Stripe's messages mask keys; the cause goes to the log, not to the client.
        log.warning("stripe call failed: %s: %s", type(error).__name__, error.user_message or error)
        raise ApiError(
            502, "api_error", "billing_unavailable", "Stripe could not be reached: retry later."
        ) from error


async def _tenant(svc: BillingServices, access: TenantAccess) -> dict[str, Any]:
    tenant = await svc.tenants.get(access.tenant.name)
    if tenant is None:
        raise ApiError.not_found("tenant", "tenant")
    return tenant


def _billing_ref(tenant: dict[str, Any], field: str, action: str) -> str:
    value = ((tenant.get("spec") or {}).get("billing") or {}).get(field)
    if not value:
        raise ApiError(
            409,
            "conflict_error",
            "no_subscription",
            f"The tenant has no Stripe subscription yet, so it cannot {action}: start a "
            "checkout (POST .../billing/checkout) first.",
        )
    return str(value)


async def _plan(svc: BillingServices, tier: Tier, interval: Interval) -> Plan:
    plan = await plans.get_plan(svc.pool, tier)
    if plan is None:
        raise ApiError.invalid(f"plan: the {tier.value} plan is not sold; choose another.", "plan")
    try:
        plan.price(interval)
    except ValueError as error:
        raise ApiError.invalid(str(error), "interval") from error
    return plan


def _stripe_key(access: TenantAccess, action: str, key: str | None) -> str | None:
    """The customer's Idempotency-Key, scoped so that two tenants' keys never meet at Stripe."""
    return f"pm:{access.tenant.name}:{action}:{key}" if key else None


class PlanOut(ApiModel):
    tier: Tier
    emails_per_month: int
    overage_allowed: bool
    yearly: bool = Field(description="Whether the plan is also sold yearly.")


class PlanChoice(ApiModel):
    plan: Tier = Field(description="The tier to subscribe to (GET /v1/billing/plans).")
    interval: Interval = Interval.MONTHLY


class RedirectOut(ApiModel):
    url: str = Field(description="Send the customer's browser there.")


class SubscriptionOut(ApiModel):
    status: str | None = None
    cancel_at_period_end: bool | None = None


class InvoiceOut(ApiModel):
    id: str
    number: str | None
    status: str | None
    amount_due: int = Field(description="In the smallest unit of `currency` (cents).")
    currency: str
    created: datetime
    hosted_invoice_url: str | None


class InvoiceList(ApiModel):
    data: list[InvoiceOut]


class UsageOut(ApiModel):
    period_start: datetime = Field(description="The 1st of the month, UTC.")
    tier: Tier
    emails_sent: int = Field(description="Messages sent this month (the Tenant's status).")
    emails_per_month: int = Field(description="The plan's monthly allowance.")
    overage_allowed: bool
    percent_used: float


@router.get("/billing/plans", responses=ERRORS, summary="The plans on sale")
async def list_plans(svc: Svc, _who: Annotated[Caller, Depends(caller)]) -> list[PlanOut]:
    return [
        PlanOut(
            tier=p.tier,
            emails_per_month=p.emails_per_month,
            overage_allowed=p.overage_allowed,
            yearly=p.price_yearly is not None,
        )
        for p in await plans.list_plans(svc.pool)
    ]


@router.post(_PATH + "/checkout", responses=ERRORS, summary="Start a Checkout for a plan")
async def checkout(
    body: PlanChoice, access: Annotated[TenantAccess, _WRITE], svc: Svc
) -> RedirectOut:
    tenant = await _tenant(svc, access)
    spec = tenant.get("spec") or {}
    if (spec.get("billing") or {}).get("stripeSubscriptionId"):
        raise ApiError(
            409,
            "conflict_error",
            "already_subscribed",
            "The tenant already has a subscription: change its plan (POST .../billing/plan).",
        )
    plan = await _plan(svc, body.plan, body.interval)
    with _stripe_errors():
        url = await flows.start_checkout(
            svc.stripe,
            svc.settings,
            tenant=access.tenant.name,
            plan=plan,
            interval=body.interval,
            contact_email=str(spec.get("contactEmail") or ""),
            customer_id=(spec.get("billing") or {}).get("stripeCustomerId") or None,
        )
    return RedirectOut(url=url)


@router.post(_PATH + "/portal", responses=ERRORS, summary="Open the Customer Portal")
async def portal(access: Annotated[TenantAccess, _WRITE], svc: Svc) -> RedirectOut:
    customer = _billing_ref(await _tenant(svc, access), "stripeCustomerId", "open the portal")
    with _stripe_errors():
        return RedirectOut(
            url=await flows.open_portal(svc.stripe, svc.settings, customer_id=customer)
        )


@router.post(
    _PATH + "/plan",
    responses=ERRORS,
    response_model_exclude_none=True,
    summary="Change plan (prorated; the tier follows Stripe)",
)
async def change_plan(
    body: PlanChoice,
    access: Annotated[TenantAccess, _WRITE],
    svc: Svc,
    idempotency_key: IdempotencyKey = None,
) -> SubscriptionOut:
    subscription = _billing_ref(
        await _tenant(svc, access), "stripeSubscriptionId", "change its plan"
    )
    plan = await _plan(svc, body.plan, body.interval)
    with _stripe_errors():
        status = await flows.change_plan(
            svc.stripe,
            subscription_id=subscription,
            plan=plan,
            interval=body.interval,
            idempotency_key=_stripe_key(access, "plan", idempotency_key),
        )
    return SubscriptionOut(status=status)


@router.post(
    _PATH + "/cancel",
    responses=ERRORS,
    response_model_exclude_none=True,
    summary="Cancel at the end of the period",
)
async def cancel(
    access: Annotated[TenantAccess, _WRITE], svc: Svc, idempotency_key: IdempotencyKey = None
) -> SubscriptionOut:
    subscription = _billing_ref(await _tenant(svc, access), "stripeSubscriptionId", "cancel")
    with _stripe_errors():
        done = await flows.cancel_at_period_end(
            svc.stripe,
            subscription_id=subscription,
            idempotency_key=_stripe_key(access, "cancel", idempotency_key),
        )
    return SubscriptionOut(cancel_at_period_end=done)


@router.get(_PATH + "/invoices", responses=ERRORS, summary="Invoices, newest first")
async def invoices(access: Annotated[TenantAccess, _READ], svc: Svc) -> InvoiceList:
    tenant = await _tenant(svc, access)
    customer = ((tenant.get("spec") or {}).get("billing") or {}).get("stripeCustomerId")
    if not customer:
        return InvoiceList(data=[])
    with _stripe_errors():
        found = await flows.list_invoices(svc.stripe, customer_id=str(customer))
    return InvoiceList(data=[InvoiceOut.model_validate(i, from_attributes=True) for i in found])


@router.get(_PATH + "/usage", responses=ERRORS, summary="This month's usage against the plan")
async def usage(access: Annotated[TenantAccess, _READ], svc: Svc) -> UsageOut:
    tenant = await _tenant(svc, access)
    tier = Tier((tenant.get("spec") or {}).get("tier") or Tier.STARTER.value)
    allowance = await plans.allowance_for(svc.pool, tier)
    sent = int((tenant.get("status") or {}).get("emailsSentThisMonth") or 0)
    now = datetime.now(UTC)
    return UsageOut(
        period_start=now.replace(day=1, hour=0, minute=0, second=0, microsecond=0),
        tier=tier,
        emails_sent=sent,
        emails_per_month=allowance.emails_per_month,
        overage_allowed=allowance.overage_allowed,
        percent_used=round(100 * sent / allowance.emails_per_month, 2),
    )
