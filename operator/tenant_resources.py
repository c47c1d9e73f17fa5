"""The Kubernetes objects a Tenant owns, as pure functions of the tenant and its tier.

Nothing here talks to the API server, so every manifest is unit-tested as data. Objects are
complete desired states for server-side apply: applying them again changes nothing, and applying
them after a tier change resizes everything at once.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from penguinmails.api.v1alpha1.tiers import TIERS, Tier, TierLimits
from penguinmails.common.egress import ALLOW_ENV, CLUSTER_ENV, EgressPolicy
from penguinmails.operator.kube import controller_reference

GROUP = "penguinmails.io"
VERSION = "v1alpha1"
TENANT_API_VERSION = f"{GROUP}/{VERSION}"
NAMESPACE_PREFIX = "tenant-"
SENDER_NAME = "penguinmails-sender"
# What a sender pod needs besides PM_TENANT, copied from the platform's sender Secret.
SENDER_SECRET_KEYS = ("PM_DATABASE_URL", "PM_REDIS_URL", "PM_SUPPRESSION_KEY")
"""What the platform Secret (PM_SENDER_SECRET) must hold."""
TENANT_SECRET_KEYS = ("PM_DATABASE_URL", "PM_REDIS_URL", "PM_TOKEN_KEY")
"""What a tenant's sender gets: its own logins and token key, never the platform's (tenant.py)."""
SENDER_COMMAND = ["penguinmails-sender"]
MANAGED_BY = {"app.kubernetes.io/managed-by": "penguinmails"}
TENANT_LABEL = f"{GROUP}/tenant"
TIER_LABEL = f"{GROUP}/tier"
ROTATED_ANNOTATION = f"{GROUP}/rotated-for"
"""On the sender Secret: the Tenant's rotate-sender-credentials value its passwords were issued
for, so that one value rotates them once (tenant.py)."""
# The namespaced kinds a tenant creates; their counts are capped per tier by the ResourceQuota.
TENANT_KINDS_PLURAL = {
    "sendingdomains": "sending_domains",
    "smtpservers": "smtp_servers",
    "campaigns": "campaigns",
}

Manifest = dict[str, Any]


def namespace_for(tenant_name: str) -> str:
    return f"{NAMESPACE_PREFIX}{tenant_name}"


@dataclass(frozen=True)
class TenantRef:
    """What every child needs to know about its Tenant."""

    name: str
    uid: str
    tier: Tier

    @property
    def namespace(self) -> str:
        return namespace_for(self.name)

    @property
    def limits(self) -> TierLimits:
        return TIERS[self.tier]

    def labels(self) -> dict[str, str]:
        return {**MANAGED_BY, TENANT_LABEL: self.name, TIER_LABEL: self.tier.value}

    def owner_reference(self) -> dict[str, Any]:
        return controller_reference("Tenant", self.name, self.uid)

    def metadata(self, name: str, *, namespaced: bool = True) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": name,
            "labels": self.labels(),
            "ownerReferences": [self.owner_reference()],
        }
        if namespaced:
            meta["namespace"] = self.namespace
        return meta


def namespace(tenant: TenantRef) -> Manifest:
    meta = tenant.metadata(tenant.namespace, namespaced=False)
    # Sender pods need nothing privileged; the restricted profile keeps it that way. Tiers that
    # may run MailU in the cluster (whose images start as root: operator/mailu/manifests.py)
    # enforce baseline instead, and still warn and audit whatever is not restricted.
    meta["labels"] |= {
        "pod-security.kubernetes.io/enforce": tenant.limits.pod_security,
        "pod-security.kubernetes.io/enforce-version": "latest",
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/warn-version": "latest",
        "pod-security.kubernetes.io/audit": "restricted",
        "pod-security.kubernetes.io/audit-version": "latest",
    }
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def resource_quota(tenant: TenantRef) -> Manifest:
    limits = tenant.limits
    hard: dict[str, str] = {
        "requests.cpu": limits.quota_cpu,
        "limits.cpu": limits.quota_cpu,
        "requests.memory": limits.quota_memory,
        "limits.memory": limits.quota_memory,
        "pods": str(limits.quota_pods),
    }
    for plural, attribute in TENANT_KINDS_PLURAL.items():
        hard[f"count/{plural}.{GROUP}"] = str(getattr(limits, attribute))
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": tenant.metadata("penguinmails-tier"),
        "spec": {"hard": hard},
    }


def limit_range(tenant: TenantRef) -> Manifest:
    limits = tenant.limits
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": tenant.metadata("penguinmails-tier"),
        "spec": {
            "limits": [
                {
                    "type": "Container",
                    "default": {
                        "cpu": limits.sender_cpu_limit,
                        "memory": limits.sender_memory_limit,
                    },
                    "defaultRequest": {
                        "cpu": limits.sender_cpu_request,
                        "memory": limits.sender_memory_request,
                    },
                    "max": {"cpu": limits.sender_cpu_limit, "memory": limits.sender_memory_limit},
                }
            ]
        },
    }


def network_policy(tenant: TenantRef) -> Manifest:
    """Nothing may connect into a tenant's namespace; senders only dial out."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": tenant.metadata("default-deny-ingress"),
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }


SMTP_PORTS = (25, 465, 587)
# Never reachable on the SMTP ports through the Internet rule: loopback, link-local (cloud
# metadata), RFC 1918, RFC 6598 and their IPv6 counterparts. PM_EGRESS_ALLOW re-opens a network
# (an internal relay) with its own rule; the cluster's ranges (PM_CLUSTER_CIDRS) are excluded too.
_NOT_INTERNET_V4 = (
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
)
_NOT_INTERNET_V6 = ("::1/128", "fc00::/7", "fe80::/10")


def _cidrs(name: str) -> tuple[str, ...]:
    found: list[str] = []
    for item in os.environ.get(name, "").split(","):
        if item.strip():
            try:
                found.append(str(ipaddress.ip_network(item.strip(), strict=False)))
            except ValueError:
                raise ValueError(
                    f"{name}: {item.strip()!r} is not a CIDR like 10.0.0.0/8"
                ) from None
    return tuple(found)


def _ports(name: str, default: tuple[int, ...]) -> tuple[int, ...]:
    raw = os.environ.get(name, "")
    if not raw.strip():
        return default
    try:
        return tuple(int(item) for item in raw.split(",") if item.strip())
    except ValueError:
        raise ValueError(f"{name}={raw!r}: give ports separated by commas, e.g. 5432") from None


@dataclass(frozen=True)
class Destination:
    """Where tenant pods may connect for one service: CIDRs (empty: any address) and ports."""

    cidrs: tuple[str, ...]
    ports: tuple[int, ...]


@dataclass(frozen=True)
class TenantEgress:
    """What a tenant's pods may dial besides DNS and SMTP (PM_TENANT_*_CIDRS / _PORTS).

    Without CIDRs a service is reachable on its ports at any address: set them in production
    (the chart's `tenantEgress` values) so that a tenant cannot reach anything else on 5432.
    """

    database: Destination = Destination((), (5432,))
    redis: Destination = Destination((), (6379,))
    api_server: Destination = Destination((), (443, 6443))
    """The sender reads its Secrets and campaigns through the Kubernetes API."""
    smtp_allowed: tuple[str, ...] = ()
    """Networks outside the Internet open on the SMTP ports (PM_EGRESS_ALLOW)."""
    cluster: tuple[str, ...] = field(default=())
    """The cluster's pod and service ranges, never reached on the SMTP ports (PM_CLUSTER_CIDRS)."""

    @classmethod
    def from_env(cls) -> TenantEgress:
        policy = EgressPolicy.from_env()
        return cls(
            database=Destination(
                _cidrs("PM_TENANT_DATABASE_CIDRS"), _ports("PM_TENANT_DATABASE_PORTS", (5432,))
            ),
            redis=Destination(
                _cidrs("PM_TENANT_REDIS_CIDRS"), _ports("PM_TENANT_REDIS_PORTS", (6379,))
            ),
            api_server=Destination(
                _cidrs("PM_TENANT_APISERVER_CIDRS"),
                _ports("PM_TENANT_APISERVER_PORTS", (443, 6443)),
            ),
            smtp_allowed=tuple(str(network) for network in policy.allowed),
            cluster=tuple(str(network) for network in policy.cluster),
        )


def _tcp(ports: Sequence[int]) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port} for port in ports]


def _to(destination: Destination) -> dict[str, Any]:
    rule: dict[str, Any] = {"ports": _tcp(destination.ports)}
    if destination.cidrs:
        rule["to"] = [{"ipBlock": {"cidr": cidr}} for cidr in destination.cidrs]
    return rule


def _internet(everything: str, not_internet: Sequence[str], cluster: Sequence[str]) -> Manifest:
    family = ipaddress.ip_network(everything).version
    excluded = [*not_internet]
    for cidr in cluster:
        network = ipaddress.ip_network(cidr)
        inside = any(
            network.subnet_of(ipaddress.ip_network(other))  # type: ignore[arg-type]
            for other in not_internet
            if ipaddress.ip_network(other).version == network.version
        )
        if network.version == family and not inside:
            excluded.append(cidr)
    return {"ipBlock": {"cidr": everything, "except": excluded}}


def egress_policy(tenant: TenantRef, egress: TenantEgress) -> Manifest:
    """What a tenant's pods may dial: DNS, the database, Redis, the API server, and SMTP to the
    Internet (or networks the platform allows), nothing else; a hostile template or relay setting
    cannot reach the cluster's services or the node's metadata endpoint."""
    dns = {
        "to": [
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                },
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            }
        ],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }
    smtp_to: list[dict[str, Any]] = [
        _internet("0.0.0.0/0", _NOT_INTERNET_V4, egress.cluster),
        _internet("::/0", _NOT_INTERNET_V6, egress.cluster),
        *({"ipBlock": {"cidr": cidr}} for cidr in egress.smtp_allowed),
        # MailU run in the tenant's own namespace (SmtpServer provider mailuInCluster).
        {"podSelector": {}},
    ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": tenant.metadata("egress"),
        "spec": {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [
                dns,
                _to(egress.database),
                _to(egress.redis),
                _to(egress.api_server),
                {"to": smtp_to, "ports": _tcp(SMTP_PORTS)},
            ],
        },
    }


def service_account(tenant: TenantRef) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": tenant.metadata(SENDER_NAME),
        "automountServiceAccountToken": True,
    }


def role(tenant: TenantRef) -> Manifest:
    """The sender reads its campaigns, domains and servers, in its namespace only, and of the
    Secrets only its own by name (penguinmails-sender, which its pod holds anyway through envFrom);
    each Campaign grants the others its plan names (campaign_secret_access)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": tenant.metadata(SENDER_NAME),
        "rules": [
            {
                "apiGroups": [GROUP],
                "resources": ["campaigns", "sendingdomains", "smtpservers"],
                "verbs": ["get", "list", "watch"],
            },
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "verbs": ["get"],
                "resourceNames": [SENDER_NAME],
            },
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
        ],
    }


def campaign_secret_access(
    namespace: str, campaign: str, campaign_uid: str, secret_names: Sequence[str]
) -> list[Manifest]:
    """A Role and RoleBinding letting the sender `get` exactly the Secrets a Campaign's plan names
    (its DKIM keys, its relays' credentials and CAs), nothing else in the namespace.

    The names depend on the tenant's objects (`<domain>-dkim`, `<server>-relay`,
    `pool-<server>-relay`, an external relay's own Secrets), and RBAC cannot select Secrets by
    label for `get`: so the Campaign controller, which writes the plan, applies this list
    with it, named by the Campaign's uid and owned by the Campaign (garbage-collected with it).
    """
    name = f"{SENDER_NAME}-campaign-{campaign_uid}"
    metadata = {
        "name": name,
        "namespace": namespace,
        "labels": {**MANAGED_BY, f"{GROUP}/campaign": campaign},
        "ownerReferences": [
            {
                "apiVersion": TENANT_API_VERSION,
                "kind": "Campaign",
                "name": campaign,
                "uid": campaign_uid,
                "controller": True,
            }
        ],
    }
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": metadata,
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["secrets"],
                    "verbs": ["get"],
                    "resourceNames": sorted(set(secret_names)),
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": metadata,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": SENDER_NAME, "namespace": namespace}],
        },
    ]


def role_binding(tenant: TenantRef) -> Manifest:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": tenant.metadata(SENDER_NAME),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SENDER_NAME},
        "subjects": [
            {"kind": "ServiceAccount", "name": SENDER_NAME, "namespace": tenant.namespace}
        ],
    }


def _egress_env() -> list[dict[str, str]]:
    """The platform's egress settings, which the sender applies to relay addresses at every
    connection (DNS rebinding): the operator's own, never the tenant's."""
    return [
        {"name": name, "value": os.environ[name]}
        for name in (ALLOW_ENV, CLUSTER_ENV)
        if os.environ.get(name, "").strip()
    ]


def sender_deployment(tenant: TenantRef, *, image: str, replicas: int) -> Manifest:
    limits = tenant.limits
    selector = {"app.kubernetes.io/name": SENDER_NAME, TENANT_LABEL: tenant.name}
    pod_spec: dict[str, Any] = {
        "serviceAccountName": SENDER_NAME,
        "priorityClassName": limits.priority_class,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "sender",
                "image": image,
                "command": SENDER_COMMAND,
                "env": [{"name": "PM_TENANT", "value": tenant.name}, *_egress_env()],
                "envFrom": [{"secretRef": {"name": SENDER_NAME}}],
                "resources": {
                    "requests": {
                        "cpu": limits.sender_cpu_request,
                        "memory": limits.sender_memory_request,
                    },
                    "limits": {
                        "cpu": limits.sender_cpu_limit,
                        "memory": limits.sender_memory_limit,
                    },
                },
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
    }
    if limits.node_selector:
        pod_spec["nodeSelector"] = dict(limits.node_selector)
    if limits.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in limits.tolerations]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": tenant.metadata(SENDER_NAME),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": tenant.labels() | selector}, "spec": pod_spec},
        },
    }


def sender_secret(
    tenant: TenantRef, data: Mapping[str, str], *, rotated_for: str | None = None
) -> Manifest:
    """The sender's Secret: the tenant's own logins and token key (base64, as in `data`), and
    the rotation request its passwords answer, if any."""
    metadata = tenant.metadata(SENDER_NAME)
    if rotated_for is not None:
        metadata["annotations"] = {ROTATED_ANNOTATION: rotated_for}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "data": {key: data[key] for key in TENANT_SECRET_KEYS},
    }


def children(
    tenant: TenantRef, *, image: str, replicas: int, egress: TenantEgress
) -> list[Manifest]:
    """Everything inside the namespace, in an order that satisfies references."""
    return [
        resource_quota(tenant),
        limit_range(tenant),
        network_policy(tenant),
        egress_policy(tenant, egress),
        service_account(tenant),
        role(tenant),
        role_binding(tenant),
        sender_deployment(tenant, image=image, replicas=replicas),
    ]


def priority_classes() -> list[Manifest]:
    """One PriorityClass per tier, so higher tiers' senders are scheduled first under pressure."""
    return [
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": limits.priority_class, "labels": dict(MANAGED_BY)},
            "value": limits.priority_value,
            "globalDefault": False,
            "preemptionPolicy": "PreemptLowerPriority",
            "description": f"Sender pods of {tier.value} tenants.",
        }
        for tier, limits in TIERS.items()
    ]


def desired_replicas(limits: TierLimits, *, suspended: bool, active_campaigns: int) -> int:
    """Senders run only while a campaign sends, and never for a suspended tenant."""
    if suspended or active_campaigns == 0:
        return 0
    return min(limits.sender_max_replicas, active_campaigns)


def is_active_campaign(campaign: Mapping[str, Any]) -> bool:
    status = campaign.get("status") or {}
    spec = campaign.get("spec") or {}
    return status.get("phase") == "Sending" and not spec.get("paused", False)


SCHEDULER_MESSAGE_MAX = 512
"""How much of the scheduler's message a condition quotes (it lists node counts and taints,
never anything secret, but it grows with the cluster)."""


def is_sender_pod(pod: Mapping[str, Any]) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return bool(labels.get("app.kubernetes.io/name") == SENDER_NAME and labels.get(TENANT_LABEL))


def pod_scheduled(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The pod's PodScheduled condition, once the scheduler has decided anything."""
    conditions = (pod.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "PodScheduled"), None)


def scheduling_state(pod: Mapping[str, Any], *, deleted: bool = False) -> str:
    """A sender pod's standing with the scheduler, as the pod watch tracks it: "True" (placed),
    "False" (refused), "Gone" (deleted) or "" (not decided yet)."""
    if deleted:
        return "Gone"
    return str((pod_scheduled(pod) or {}).get("status") or "")


CONFIG_ERROR = "CreateContainerConfigError"


def config_error(pod: Mapping[str, Any]) -> bool:
    """Whether a container of the pod waits in CreateContainerConfigError: the kubelet cannot
    build its environment, which for a sender means its Secret is missing (or lacks a key)."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return any(
        ((status.get("state") or {}).get("waiting") or {}).get("reason") == CONFIG_ERROR
        for status in statuses
    )


def scheduling_news(previous: str, state: str) -> bool:
    """Whether going from `previous` to `state` changes what the pod's Tenant reports: a pod
    refused, or one that was refused being placed or gone. A pod placed at the first attempt, or
    one not decided yet, changes nothing."""
    return bool(state) and state != previous and "False" in (state, previous)


@dataclass(frozen=True)
class SenderPlacement:
    """Where a tenant's sender pods stand with the scheduler."""

    pods: int
    """Sender pods that are not being deleted."""
    unschedulable: int
    """Of which the scheduler found no node for."""
    scheduler_message: str = ""
    """The scheduler's reason for one of them (one line, bounded)."""


def sender_placement(pods: Sequence[Mapping[str, Any]]) -> SenderPlacement:
    """Count the sender pods among `pods` (a tenant namespace's) the scheduler cannot place."""
    senders = [
        p
        for p in pods
        if is_sender_pod(p) and not (p.get("metadata") or {}).get("deletionTimestamp")
    ]
    stuck = [
        scheduled
        for scheduled in (pod_scheduled(p) for p in senders)
        if scheduled is not None
        and scheduled.get("status") == "False"
        and scheduled.get("reason") == "Unschedulable"
    ]
    message = " ".join(str(stuck[0].get("message") or "").split()) if stuck else ""
    if len(message) > SCHEDULER_MESSAGE_MAX:
        message = message[: SCHEDULER_MESSAGE_MAX - 3] + "..."
    return SenderPlacement(len(senders), len(stuck), message)


def _taint(toleration: Mapping[str, str]) -> str:
    return f"{toleration['key']}={toleration['value']}:{toleration['effect']}"


def unschedulable_hint(tier: Tier) -> str:
    """What an operator of the cluster can do about senders that find no node."""
    limits = TIERS[tier]
    if limits.node_selector:
        selector = ",".join(f"{k}={v}" for k, v in sorted(limits.node_selector.items()))
        taints = ", ".join(_taint(t) for t in limits.tolerations)
        return (
            f"{tier.value} senders run only on the dedicated pool: add a node labelled "
            f"{selector} and tainted {taints}, or free capacity there"
        )
    dedicated = sorted({_taint(t) for other in TIERS.values() for t in other.tolerations})
    return (
        f"{tier.value} senders run only outside the dedicated pool (they do not tolerate "
        f"{', '.join(dedicated)}): add such a node, or free capacity"
    )
