"""Whether an in-cluster MailU can run in a namespace, decided before anything is applied.

Applying Deployments the namespace cannot admit would only leave ReplicaSets that fail to create
pods (``FailedCreate``), which the SmtpServer's owner never sees. Instead the SmtpServer is refused
with a condition naming the namespace, its tier and the fix; nothing is retried until the spec
changes, since only a change of spec or tier helps:

- ``PodSecurityRestricted``: the namespace enforces Pod Security ``restricted``. MailU's own
  images start as root (manifests.py), so they can run only where ``baseline`` (or less) is
  enforced: tenant namespaces of the tiers with ``pod_security="baseline"`` (business and
  enterprise, whose pods run on the dedicated node pool), or a namespace the platform labels so.
- ``TierLimitRangeExceeded``: a container's limits above the LimitRange's ``max`` of the tier.
- ``TierQuotaExceeded``: MailU, plus the tier's senders at their maximum replicas, plus the other
  in-cluster MailUs already in the namespace, above the tier's ResourceQuota.

A namespace without the tier label (not a tenant's) has no tier to check against: only its Pod
Security label counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity

from penguinmails.api.v1alpha1.smtpserver import MailuInClusterProvider
from penguinmails.api.v1alpha1.tiers import TIERS, Tier, TierLimits
from penguinmails.operator.mailu.manifests import COMPONENT_PORTS, RESOURCES, replicas
from penguinmails.operator.tenant_resources import TIER_LABEL

ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
# Pod Security levels under which MailU's root-started images are admitted.
ADMITTING = frozenset({"baseline", "privileged"})
FIELD = "spec.provider.mailuInCluster"
_MI = Decimal(1024**2)


class MailuRefusedError(Exception):
    """The namespace cannot run this MailU: ``reason`` and ``message`` become the condition."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Usage:
    """What a set of pods counts against a ResourceQuota."""

    requests_cpu: Decimal = Decimal(0)
    limits_cpu: Decimal = Decimal(0)
    requests_memory: Decimal = Decimal(0)
    limits_memory: Decimal = Decimal(0)
    pods: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.requests_cpu + other.requests_cpu,
            self.limits_cpu + other.limits_cpu,
            self.requests_memory + other.requests_memory,
            self.limits_memory + other.limits_memory,
            self.pods + other.pods,
        )

    def times(self, count: int) -> Usage:
        return Usage(
            self.requests_cpu * count,
            self.limits_cpu * count,
            self.requests_memory * count,
            self.limits_memory * count,
            self.pods * count,
        )


def _q(value: object) -> Decimal:
    return Decimal(parse_quantity(str(value))) if value not in (None, "") else Decimal(0)


def _pod(
    cpu_request: object, memory_request: object, cpu_limit: object, memory_limit: object
) -> Usage:
    return Usage(_q(cpu_request), _q(cpu_limit), _q(memory_request), _q(memory_limit), 1)


def mailu_usage(mailu: MailuInClusterProvider) -> Usage:
    """All pods of one in-cluster MailU (manifests.py's resources and replicas)."""
    total = Usage()
    for component in COMPONENT_PORTS:
        r = RESOURCES[component]
        pod = _pod(r.cpu_request, r.memory_request, r.cpu_limit, r.memory_limit)
        total += pod.times(replicas(mailu, component))
    return total


def sender_usage(tier: TierLimits) -> Usage:
    """The tier's sender pods at their maximum replicas (tenant_resources.sender_deployment)."""
    pod = _pod(
        tier.sender_cpu_request,
        tier.sender_memory_request,
        tier.sender_cpu_limit,
        tier.sender_memory_limit,
    )
    return pod.times(tier.sender_max_replicas)


def deployments_usage(deployments: Iterable[Mapping[str, Any]]) -> Usage:
    """Pods of live Deployments (another MailU in the namespace), from their specs."""
    total = Usage()
    for deployment in deployments:
        spec = deployment.get("spec") or {}
        pod_spec = ((spec.get("template") or {}).get("spec")) or {}
        pod = Usage(pods=1)
        for container in pod_spec.get("containers") or []:
            resources = container.get("resources") or {}
            requests = resources.get("requests") or {}
            limits = resources.get("limits") or {}
            one = _pod(
                requests.get("cpu"), requests.get("memory"), limits.get("cpu"), limits.get("memory")
            )
            pod += Usage(one.requests_cpu, one.limits_cpu, one.requests_memory, one.limits_memory)
        count = spec.get("replicas")
        total += pod.times(1 if count is None else int(count))
    return total


def _cpu(value: Decimal) -> str:
    return f"{value.normalize():f}"


def _memory(value: Decimal) -> str:
    return f"{(value / _MI).quantize(Decimal(1))}Mi"


def tier_of(labels: Mapping[str, str]) -> Tier | None:
    value = labels.get(TIER_LABEL)
    return Tier(value) if value in {t.value for t in Tier} else None


def baseline_tiers() -> str:
    return ", ".join(t.value for t, limits in TIERS.items() if limits.pod_security in ADMITTING)


def check(
    namespace: str,
    labels: Mapping[str, str],
    mailu: MailuInClusterProvider,
    others: Usage = Usage(),
) -> TierLimits | None:
    """The tier of the namespace (None: not a tenant's) if this MailU can run there; else
    MailuRefusedError saying why and what to change."""
    tier = tier_of(labels)
    where = f"namespace {namespace}" + (f" (tier {tier.value})" if tier else "")
    level = labels.get(ENFORCE_LABEL, "privileged")
    if level not in ADMITTING:
        raise MailuRefusedError(
            "PodSecurityRestricted",
            f"{where} enforces Pod Security {level!r}, and MailU's images (front, admin, smtp, "
            "imap, antispam) start as root to drop privileges themselves, which it forbids. "
            f"In-cluster MailU runs where baseline is enforced (tiers {baseline_tiers()}): "
            "use provider.relay or provider.hostwinds here, or move the tenant to such a tier",
        )
    if tier is None:
        return None
    limits = TIERS[tier]
    max_cpu, max_memory = _q(limits.sender_cpu_limit), _q(limits.sender_memory_limit)
    for component, r in RESOURCES.items():
        if _q(r.cpu_limit) > max_cpu or _q(r.memory_limit) > max_memory:
            raise MailuRefusedError(
                "TierLimitRangeExceeded",
                f"{where}: MailU's {component} needs limits cpu {r.cpu_limit}, memory "
                f"{r.memory_limit}, above the tier's LimitRange max (cpu {limits.sender_cpu_limit}"
                f", memory {limits.sender_memory_limit}); move the tenant to a larger tier",
            )
    own = mailu_usage(mailu)
    need = own + sender_usage(limits) + others
    quota_cpu, quota_memory = _q(limits.quota_cpu), _q(limits.quota_memory)
    missing = [
        f"{name} {shown(value)} > {shown(hard)}"
        for name, value, hard, shown in (
            ("requests.cpu", need.requests_cpu, quota_cpu, _cpu),
            ("limits.cpu", need.limits_cpu, quota_cpu, _cpu),
            ("requests.memory", need.requests_memory, quota_memory, _memory),
            ("limits.memory", need.limits_memory, quota_memory, _memory),
            ("pods", Decimal(need.pods), Decimal(limits.quota_pods), _cpu),
        )
        if value > hard
    ]
    if missing:
        others_note = f" and {others.pods} pods of other MailUs there" if others.pods else ""
        raise MailuRefusedError(
            "TierQuotaExceeded",
            f"{where}: this MailU ({own.pods} pods at {FIELD}.replicas="
            f"{mailu.replicas}), with the tier's senders at their maximum "
            f"({limits.sender_max_replicas} pods){others_note}, would exceed the tier's "
            f"ResourceQuota: {', '.join(missing)}; lower {FIELD}.replicas, or move the tenant "
            "to a larger tier",
        )
    return limits
