"""The Tenant changes billing makes, through the API server like any other client.

Billing writes `spec.tier`, `spec.suspended`, `spec.suspendReason` and `spec.billing` with a
JSON merge patch under its own field manager (`penguinmails-billing`), so GitOps tools see who
owns what. Each patch names the resourceVersion it was computed from, so a concurrent edit
makes it fail (409) instead of being overwritten; the change is then decided again from the
Tenant as it is now (the operator's status writes alone move the resourceVersion), a few
times, before the webhook delivery fails and Stripe retries it.

A Tenant is billing's only while its `spec.billing.stripeSubscriptionId` names the
subscription an event is about: a Tenant managed by GitOps (no subscription) is never touched,
and a suspension set by an administrator (a reason without the billing prefix) is never lifted
by a payment.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ConflictError, NotFoundError

from penguinmails.api.v1alpha1 import GROUP_VERSION
from penguinmails.api.v1alpha1.tiers import Tier

FIELD_MANAGER = "penguinmails-billing"
CONFLICT_ATTEMPTS = 5
"""Reads and patches per change before a conflict fails the delivery."""
SUSPEND_PREFIX = "Billing: "
"""Every suspension reason billing writes starts so; only those are lifted by billing."""


@dataclass(frozen=True)
class Desired:
    """What a subscription's state means for its Tenant. None: leave that field alone."""

    tier: Tier | None
    suspended: bool | None
    reason: str | None = None


class TenantWriter:
    """Reads Tenants and applies `Desired` to them (a synchronous client in worker threads)."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._dynamic = DynamicClient(api_client)

    def _tenants(self) -> Any:
        return self._dynamic.resources.get(api_version=GROUP_VERSION, kind="Tenant")

    def _get_sync(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(self._tenants().get(name=name).to_dict())
        except NotFoundError:
            return None

    async def get(self, name: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self._get_sync, name)

    def _patch_sync(self, name: str, patch: dict[str, Any]) -> None:
        self._tenants().patch(
            body=patch,
            name=name,
            content_type="application/merge-patch+json",
            field_manager=FIELD_MANAGER,
        )

    async def link(self, name: str, *, customer_id: str, subscription_id: str) -> str:
        """Record the subscription paying for `name` (after Checkout); what happened."""
        for attempt in range(CONFLICT_ATTEMPTS):
            try:
                return await self._link(name, customer_id, subscription_id)
            except ConflictError:
                if attempt == CONFLICT_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    async def _link(self, name: str, customer_id: str, subscription_id: str) -> str:
        tenant = await self.get(name)
        if tenant is None:
            return f"no Tenant {name}"
        billing = (tenant.get("spec") or {}).get("billing") or {}
        current = billing.get("stripeSubscriptionId")
        if current == subscription_id:
            return f"Tenant {name} already linked to {subscription_id}"
        if current:
            return f"Tenant {name} is paid by {current}, not {subscription_id}: left alone"
        patch = {
            "metadata": {"resourceVersion": tenant["metadata"]["resourceVersion"]},
            "spec": {
                "billing": {
                    "stripeCustomerId": customer_id,
                    "stripeSubscriptionId": subscription_id,
                }
            },
        }
        await asyncio.to_thread(self._patch_sync, name, patch)
        return f"Tenant {name} linked to {subscription_id}"

    async def apply(self, name: str, subscription_id: str, desired: Desired) -> str:
        """Bring the Tenant to `desired` if `subscription_id` pays for it; what happened."""
        for attempt in range(CONFLICT_ATTEMPTS):
            try:
                return await self._apply(name, subscription_id, desired)
            except ConflictError:
                if attempt == CONFLICT_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    async def _apply(self, name: str, subscription_id: str, desired: Desired) -> str:
        tenant = await self.get(name)
        if tenant is None:
            return f"no Tenant {name}"
        spec = tenant.get("spec") or {}
        if ((spec.get("billing") or {}).get("stripeSubscriptionId")) != subscription_id:
            return f"Tenant {name} is not paid by {subscription_id}: left alone"
        changes: dict[str, Any] = {}
        if desired.tier is not None and spec.get("tier") != desired.tier.value:
            changes["tier"] = desired.tier.value
        suspended = bool(spec.get("suspended"))
        reason = str(spec.get("suspendReason") or "")
        ours = reason.startswith(SUSPEND_PREFIX)
        # An administrator's suspension (a reason of theirs) stays exactly as they wrote it.
        if desired.suspended is True and (not suspended or (ours and reason != desired.reason)):
            changes["suspended"] = True
            changes["suspendReason"] = desired.reason
        elif desired.suspended is False and suspended and ours:
            changes["suspended"] = False
            changes["suspendReason"] = None
        if not changes:
            return f"Tenant {name} unchanged"
        patch = {
            "metadata": {"resourceVersion": tenant["metadata"]["resourceVersion"]},
            "spec": changes,
        }
        await asyncio.to_thread(self._patch_sync, name, patch)
        return f"Tenant {name}: " + ", ".join(f"{k}={v}" for k, v in changes.items())
