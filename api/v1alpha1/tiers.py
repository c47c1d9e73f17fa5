"""The one table of what each tier gets.

The operator sizes a tenant's namespace (ResourceQuota, PriorityClass, sender Deployment) and
enforces object counts from ``limits_for(tenant.spec.tier)``; docs/resources.md prints this
table (generated, so it cannot drift).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class Tier(StrEnum):
    """Commercial tier of a tenant; decides quotas, limits and scheduling."""

    STARTER = "starter"
    PROFESSIONAL = "professional"
    BUSINESS = "business"
    ENTERPRISE = "enterprise"


@dataclass(frozen=True)
class TierLimits:
    """Limits and sizing for one tier."""

    emails_per_month: int
    """Messages a tenant may send per calendar month (UTC)."""
    sending_domains: int
    """Maximum number of SendingDomain objects."""
    smtp_servers: int
    """Maximum number of SmtpServer objects."""
    dedicated_servers: int
    """Of which with ``pool: dedicated`` (0 = shared pool only)."""
    campaigns: int
    """Maximum number of Campaign objects."""
    sender_max_replicas: int
    """Sender Deployment replicas while a campaign runs (0 while none runs)."""
    sender_cpu_request: str
    sender_cpu_limit: str
    sender_memory_request: str
    sender_memory_limit: str
    quota_cpu: str
    """Namespace ResourceQuota: ``requests.cpu`` and ``limits.cpu``."""
    quota_memory: str
    """Namespace ResourceQuota: ``requests.memory`` and ``limits.memory``."""
    quota_pods: int
    """Namespace ResourceQuota: ``pods``."""
    priority_class: str
    """Name of the PriorityClass the tenant's pods run with."""
    priority_value: int
    """Value of that PriorityClass; higher tiers get higher values."""
    node_selector: Mapping[str, str]
    """Node selector of the tenant's pods (empty: any node)."""
    tolerations: tuple[Mapping[str, str], ...]
    """Tolerations of the tenant's pods (Kubernetes field names: key, operator, value, effect)."""
    api_rate_factor: int
    """Customer API requests per minute per API key or sign-in, as a multiple of the starter
    rate (PM_API_KEY_REQUESTS_PER_MINUTE; api/http/ratelimit.py)."""
    pod_security: str
    """Pod Security Standard the tenant's namespace enforces: ``restricted``, or ``baseline``
    where in-cluster MailU may run (its images start as root to drop privileges themselves;
    only tiers whose pods run on the dedicated pool get it; warn and audit stay restricted)."""


DEDICATED_POOL_LABEL = "penguinmails.io/pool"
"""Node label (and taint key) of the nodes reserved for the dedicated tiers."""
DEDICATED_POOL_VALUE = "dedicated"

_NO_SELECTOR: Mapping[str, str] = MappingProxyType({})
_DEDICATED_SELECTOR: Mapping[str, str] = MappingProxyType(
    {DEDICATED_POOL_LABEL: DEDICATED_POOL_VALUE}
)
_DEDICATED_TOLERATION: Mapping[str, str] = MappingProxyType(
    {
        "key": DEDICATED_POOL_LABEL,
        "operator": "Equal",
        "value": DEDICATED_POOL_VALUE,
        "effect": "NoSchedule",
    }
)

TIERS: Mapping[Tier, TierLimits] = MappingProxyType(
    {
        Tier.STARTER: TierLimits(
            emails_per_month=10_000,
            sending_domains=1,
            smtp_servers=1,
            dedicated_servers=0,
            campaigns=3,
            sender_max_replicas=1,
            sender_cpu_request="100m",
            sender_cpu_limit="500m",
            sender_memory_request="128Mi",
            sender_memory_limit="256Mi",
            quota_cpu="2",
            quota_memory="2Gi",
            quota_pods=10,
            priority_class="penguinmails-starter",
            priority_value=1000,
            node_selector=_NO_SELECTOR,
            tolerations=(),
            pod_security="restricted",
            api_rate_factor=1,
        ),
        Tier.PROFESSIONAL: TierLimits(
            emails_per_month=100_000,
            sending_domains=5,
            smtp_servers=3,
            dedicated_servers=0,
            campaigns=20,
            sender_max_replicas=2,
            sender_cpu_request="200m",
            sender_cpu_limit="1",
            sender_memory_request="256Mi",
            sender_memory_limit="512Mi",
            quota_cpu="4",
            quota_memory="4Gi",
            quota_pods=20,
            priority_class="penguinmails-professional",
            priority_value=2000,
            node_selector=_NO_SELECTOR,
            tolerations=(),
            pod_security="restricted",
            api_rate_factor=2,
        ),
        Tier.BUSINESS: TierLimits(
            emails_per_month=500_000,
            sending_domains=20,
            smtp_servers=10,
            dedicated_servers=2,
            campaigns=100,
            sender_max_replicas=4,
            sender_cpu_request="250m",
            sender_cpu_limit="1",
            sender_memory_request="256Mi",
            sender_memory_limit="1Gi",
            quota_cpu="8",
            quota_memory="8Gi",
            quota_pods=40,
            priority_class="penguinmails-business",
            priority_value=3000,
            node_selector=_DEDICATED_SELECTOR,
            tolerations=(_DEDICATED_TOLERATION,),
            pod_security="baseline",
            api_rate_factor=5,
        ),
        Tier.ENTERPRISE: TierLimits(
            emails_per_month=5_000_000,
            sending_domains=100,
            smtp_servers=50,
            dedicated_servers=20,
            campaigns=1000,
            sender_max_replicas=10,
            sender_cpu_request="500m",
            sender_cpu_limit="2",
            sender_memory_request="512Mi",
            sender_memory_limit="2Gi",
            quota_cpu="32",
            quota_memory="32Gi",
            quota_pods=100,
            priority_class="penguinmails-enterprise",
            priority_value=4000,
            node_selector=_DEDICATED_SELECTOR,
            tolerations=(_DEDICATED_TOLERATION,),
            pod_security="baseline",
            api_rate_factor=10,
        ),
    }
)


def limits_for(tier: Tier | str) -> TierLimits:
    """The limits of ``tier`` (a Tier or its string value); ValueError for an unknown tier."""
    try:
        key = Tier(tier)
    except ValueError:
        valid = ", ".join(t.value for t in Tier)
        raise ValueError(f"unknown tier {tier!r}: expected one of {valid}") from None
    return TIERS[key]
