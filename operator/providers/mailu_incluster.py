"""MailU in the tenant's namespace: the "external resource" is the set of objects it owns.

create and update apply every manifest (server-side apply: idempotent, and it repairs drift),
once mailu/fit.py has found that the namespace can run it (else a condition says why);
the address is the public Service's load-balancer address (or its cluster IP when not exposed);
delete has nothing to do: the objects go by garbage collection with their SmtpServer.
"""

from __future__ import annotations

from typing import Any

from penguinmails.api.v1alpha1.smtpserver import SmtpServerSpec
from penguinmails.api.v1alpha1.tiers import TierLimits
from penguinmails.operator.context import Context
from penguinmails.operator.mailu.fit import MailuRefusedError, check, deployments_usage
from penguinmails.operator.mailu.install import ensure_mailu_secrets
from penguinmails.operator.mailu.manifests import (
    COMPONENT_PORTS,
    Owner,
    manifests,
    public_service_name,
)
from penguinmails.operator.providers.base import External, ProviderError, ServerRef


def _address(service: dict[str, Any]) -> str | None:
    spec = service.get("spec") or {}
    if spec.get("type") == "LoadBalancer":
        for ingress in ((service.get("status") or {}).get("load_balancer") or {}).get(
            "ingress"
        ) or []:
            if ingress.get("ip") or ingress.get("hostname"):
                return str(ingress.get("ip") or ingress.get("hostname"))
        return None
    cluster_ip = spec.get("cluster_ip") or spec.get("clusterIP")
    return str(cluster_ip) if cluster_ip and cluster_ip != "None" else None


class MailuInCluster:
    create_settle_seconds = 0.0  # applied objects are readable as soon as the apply returns

    def __init__(self, ctx: Context, spec: SmtpServerSpec) -> None:
        self._ctx = ctx
        self._spec = spec

    @staticmethod
    def owner(ref: ServerRef) -> Owner:
        return Owner(ref.name, ref.namespace, ref.uid)

    async def observe(self, ref: ServerRef, provider_id: str | None) -> External | None:
        owner = self.owner(ref)
        service = await self._ctx.kube.get(
            "v1", "Service", public_service_name(owner), ref.namespace
        )
        if service is None:
            return None
        address = _address(_snake(service))
        return External(
            provider_id=f"{ref.namespace}/{owner.prefix}",
            ready=address is not None,
            state="exposed" if address else "waiting for a load-balancer address",
            ip_address=address,
        )

    async def _fit(self, ref: ServerRef) -> TierLimits | None:
        """The namespace's tier, once this MailU is known to fit its Pod Security level,
        LimitRange and ResourceQuota (mailu/fit.py); a refusal is not retried."""
        mailu = self._spec.provider.mailu_in_cluster
        assert mailu is not None
        namespace = await self._ctx.kube.get("v1", "Namespace", ref.namespace) or {}
        labels = (namespace.get("metadata") or {}).get("labels") or {}
        own = self.owner(ref).selector()
        others = [
            deployment
            for deployment in await self._ctx.kube.list("apps/v1", "Deployment", ref.namespace)
            if _is_other_mailu((deployment.get("metadata") or {}).get("labels") or {}, own)
        ]
        try:
            return check(ref.namespace, labels, mailu, deployments_usage(others))
        except MailuRefusedError as refused:
            raise ProviderError(refused.reason, refused.message, transient=False) from None

    async def _apply(self, ref: ServerRef) -> None:
        tier = await self._fit(ref)
        secrets = await ensure_mailu_secrets(self._ctx, ref.namespace, ref.name, ref.uid)
        for manifest in manifests(self.owner(ref), self._spec, secrets, tier):
            await self._ctx.kube.apply(manifest)

    async def create(self, ref: ServerRef) -> None:
        await self._apply(ref)

    async def update(self, ref: ServerRef, current: External) -> External:
        await self._apply(ref)
        return current

    async def delete(self, ref: ServerRef, provider_id: str | None) -> bool:
        return True  # owned objects go by garbage collection

    async def stack_ready(self, ref: ServerRef) -> tuple[bool, str]:
        """Whether every MailU Deployment has an available replica; else which do not."""
        owner = self.owner(ref)
        waiting = []
        for component in COMPONENT_PORTS:
            deployment = await self._ctx.kube.get(
                "apps/v1", "Deployment", f"{owner.prefix}-{component}", ref.namespace
            )
            status = (deployment or {}).get("status") or {}
            available = status.get("available_replicas") or status.get("availableReplicas")
            if not available:
                waiting.append(component)
        if waiting:
            return False, f"waiting for MailU {', '.join(waiting)} to become available"
        return True, f"MailU {', '.join(COMPONENT_PORTS)} available"


def _is_other_mailu(labels: dict[str, Any], own: dict[str, str]) -> bool:
    name = "app.kubernetes.io/name"
    instance = "app.kubernetes.io/instance"
    return labels.get(name) == own[name] and labels.get(instance) != own[instance]


def _snake(service: dict[str, Any]) -> dict[str, Any]:
    """The dynamic client answers camelCase; accept both spellings in one place."""
    status = service.get("status") or {}
    balancer = status.get("loadBalancer") or status.get("load_balancer") or {}
    spec = service.get("spec") or {}
    return {
        "spec": {
            "type": spec.get("type"),
            "cluster_ip": spec.get("clusterIP") or spec.get("cluster_ip"),
        },
        "status": {"load_balancer": balancer},
    }
