"""MailU inside the cluster: the objects an SmtpServer with provider.mailuInCluster owns.

Pure functions of the SmtpServer, so every manifest is tested as data and applied with
server-side apply (applying again changes nothing). Everything carries an ownerReference to the
SmtpServer: deleting it removes MailU by garbage collection, even while the operator is down.

Port 25 goes through a LoadBalancer Service with ``externalTrafficPolicy: Local``. With the
default (Cluster) policy, kube-proxy SNATs incoming connections, so MailU sees a cluster address
as the client, and every cluster address is in MailU's trusted relay networks (SUBNET/RELAYNETS):
the whole Internet would be allowed to relay through it — an open relay, blocklisted within
hours (MailU issue #576). Local keeps the real client address. An HTTP ingress cannot carry SMTP.

Pod Security: MailU's own images (front, admin, smtp, imap, antispam) start as root and drop
privileges themselves (``chown`` of their volumes, ``setgroups``/``setuid`` to mailu, postfix,
mail, rspamd; the Postfix and Dovecot masters stay root), so they cannot meet ``restricted``
(runAsNonRoot, no capabilities) — MailU's Helm chart, too, leaves their security context off. They
run as tight as ``baseline`` allows: seccomp RuntimeDefault, no privilege escalation, every
capability dropped but the few the start scripts use, all in baseline's list. Redis (the upstream
image) runs restricted, as its own user. Where they may run is fit.py's decision.

Storage: one ReadWriteOnce volume per stateful component, each mounted by one single-replica
Deployment (admin, smtp's queue, imap's mail, antispam, redis). Only front scales out; its
certificates are on a volume of their own, ReadWriteMany once it has more than one replica.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from penguinmails.api.v1alpha1.smtpserver import MailuInClusterProvider, SmtpServerSpec
from penguinmails.api.v1alpha1.tiers import TierLimits
from penguinmails.operator.kube import controller_reference
from penguinmails.operator.mailu.render import MailuSecrets, env_values, image

Manifest = dict[str, Any]
MAIL_PORTS = {"smtp": 25, "smtps": 465, "submission": 587}
# What each component listens on, for its ClusterIP Service (MailU finds peers by HOST_*).
COMPONENT_PORTS = {
    "front": {**MAIL_PORTS, "http": 80},
    "admin": {"http": 8080},
    "smtp": {"smtp": 25, "lmtp": 10025},
    "imap": {"imap": 143, "lmtp": 2525, "sieve": 4190},
    "antispam": {"http": 11334, "milter": 11332},
    "redis": {"redis": 6379},
}
# Front only: every other component keeps state on a ReadWriteOnce volume (Postfix's queue and
# Dovecot's index must never have two writers).
SCALABLE = frozenset({"front"})
VOLUME_PATHS = {
    "admin": {"/data": "data", "/dkim": "dkim"},
    "smtp": {"/queue": "mailqueue"},
    "imap": {"/mail": "mail"},
    "antispam": {"/var/lib/rspamd": "filter"},
    "redis": {"/data": "redis"},
    "front": {"/certs": "certs"},
}
# The volumes that grow with mail get spec.storageSize; the others this much.
LARGE_VOLUMES = frozenset({"smtp", "imap"})
SMALL_VOLUME_SIZE = "1Gi"


@dataclass(frozen=True)
class Resources:
    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str

    def as_manifest(self) -> dict[str, dict[str, str]]:
        return {
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
            "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit},
        }


# Per container; fit.py checks them against the tier's LimitRange and ResourceQuota. Rspamd is
# the hungry one (its maps and Bayes in memory); nginx, Postfix and Dovecot idle small.
RESOURCES = {
    "front": Resources("50m", "64Mi", "250m", "128Mi"),
    "admin": Resources("50m", "128Mi", "500m", "512Mi"),
    "smtp": Resources("50m", "64Mi", "500m", "256Mi"),
    "imap": Resources("50m", "64Mi", "500m", "256Mi"),
    "antispam": Resources("100m", "256Mi", "1", "1Gi"),
    "redis": Resources("25m", "32Mi", "250m", "128Mi"),
}
# The only component whose image runs as a non-root user: the upstream redis image's own.
RESTRICTED = frozenset({"redis"})
REDIS_USER = 999
REDIS_GROUP = 1000
# What MailU's start scripts need as root, nothing more; all in baseline's allowed list.
MAILU_CAPABILITIES = (
    "CHOWN",  # chown of the volumes to the component's user
    "DAC_OVERRIDE",  # root reading/writing files its users own
    "FOWNER",  # chmod of generated configuration
    "SETGID",  # dropping privileges (setgroups/setgid)
    "SETUID",  # dropping privileges (setuid)
    "NET_BIND_SERVICE",  # ports 25, 80, 143, 465, 587
    "SYS_CHROOT",  # Postfix and Dovecot chroot their network-facing processes
    "KILL",  # the masters signal children running as other users
)


OPERATOR_POD_LABELS = {
    "app.kubernetes.io/name": "penguinmails",
    "app.kubernetes.io/component": "operator",
}
"""The operator's pods under the chart (selectorLabels in charts/penguinmails)."""


@dataclass(frozen=True)
class Owner:
    name: str
    namespace: str
    uid: str

    @property
    def prefix(self) -> str:
        return f"{self.name}-mailu"

    def metadata(self, name: str, component: str | None = None) -> dict[str, Any]:
        return {
            "name": name,
            "namespace": self.namespace,
            "labels": {**self.selector(component), "app.kubernetes.io/managed-by": "penguinmails"},
            "ownerReferences": [controller_reference("SmtpServer", self.name, self.uid)],
        }

    def selector(self, component: str | None = None) -> dict[str, str]:
        labels = {"app.kubernetes.io/name": "mailu", "app.kubernetes.io/instance": self.prefix}
        if component:
            labels["app.kubernetes.io/component"] = component
        return labels


def public_service_name(owner: Owner) -> str:
    return f"{owner.prefix}-public"


def _env(owner: Owner, spec: SmtpServerSpec, secrets: MailuSecrets) -> dict[str, str]:
    values = env_values(spec, secrets, relaynets=[])
    # Secrets come from the Secret, not the ConfigMap.
    values.pop("SECRET_KEY")
    values.pop("API_TOKEN")
    for component in ("admin", "smtp", "imap", "antispam", "redis", "front"):
        values[f"HOST_{component.upper()}"] = f"{owner.prefix}-{component}"
    values["HOST_ANTISPAM_MILTER"] = f"{owner.prefix}-antispam:11332"
    values["HOST_ANTISPAM_WEBUI"] = f"{owner.prefix}-antispam:11334"
    values["HOST_LMTP"] = f"{owner.prefix}-imap:2525"
    return values


def manifests(
    owner: Owner, spec: SmtpServerSpec, secrets: MailuSecrets, tier: TierLimits | None = None
) -> list[Manifest]:
    """Every object of one in-cluster MailU, in an order that applies cleanly. With the tier of
    a tenant's namespace, the pods go where that tier's pods go (its node pool)."""
    mailu = spec.provider.mailu_in_cluster
    assert mailu is not None, "spec.provider.mailuInCluster is not set"
    objects: list[Manifest] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": owner.metadata(f"{owner.prefix}-env"),
            "data": _env(owner, spec, secrets),
        },
    ]
    objects.extend(_volume(owner, mailu, component) for component in VOLUME_PATHS)
    for component in COMPONENT_PORTS:
        objects.append(_deployment(owner, mailu, component, tier))
        objects.append(_service(owner, component))
    objects.append(_public_service(owner, mailu))
    objects.append(_network_policy(owner))
    return objects


def replicas(mailu: MailuInClusterProvider, component: str) -> int:
    return mailu.replicas if component in SCALABLE else 1


def shared_volume(mailu: MailuInClusterProvider, component: str) -> bool:
    """Whether the component's volume is mounted by several pods (ReadWriteMany)."""
    return replicas(mailu, component) > 1


def claim_name(owner: Owner, mailu: MailuInClusterProvider, component: str) -> str:
    # A claim's access modes cannot change: the shared volume is another claim.
    suffix = "-shared" if shared_volume(mailu, component) else ""
    return f"{owner.prefix}-{component}{suffix}"


def _volume(owner: Owner, mailu: MailuInClusterProvider, component: str) -> Manifest:
    size = mailu.storage_size if component in LARGE_VOLUMES else SMALL_VOLUME_SIZE
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteMany" if shared_volume(mailu, component) else "ReadWriteOnce"],
        "resources": {"requests": {"storage": size}},
    }
    if mailu.storage_class_name:
        spec["storageClassName"] = mailu.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": owner.metadata(claim_name(owner, mailu, component), component),
        "spec": spec,
    }


def _security(component: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod, container) security contexts: restricted for redis, least-privilege baseline for
    MailU's own images (module docstring)."""
    seccomp = {"seccompProfile": {"type": "RuntimeDefault"}}
    if component in RESTRICTED:
        pod = {
            **seccomp,
            "runAsNonRoot": True,
            "runAsUser": REDIS_USER,
            "runAsGroup": REDIS_GROUP,
            "fsGroup": REDIS_GROUP,
        }
        return pod, {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
    return seccomp, {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"], "add": list(MAILU_CAPABILITIES)},
    }


def _deployment(
    owner: Owner, mailu: MailuInClusterProvider, component: str, tier: TierLimits | None
) -> Manifest:
    secret = f"{owner.prefix}"
    pod_security, container_security = _security(component)
    container: dict[str, Any] = {
        "name": component,
        "image": image(component, mailu.version),
        "ports": [
            {"name": name[:15], "containerPort": port}
            for name, port in COMPONENT_PORTS[component].items()
        ],
        "resources": RESOURCES[component].as_manifest(),
        "securityContext": container_security,
    }
    if component != "redis":
        container["envFrom"] = [{"configMapRef": {"name": f"{owner.prefix}-env"}}]
        container["env"] = [
            {
                "name": "SECRET_KEY",
                "valueFrom": {"secretKeyRef": {"name": secret, "key": "secret-key"}},
            },
            {
                "name": "API_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": secret, "key": "api-token"}},
            },
        ]
    container["volumeMounts"] = [
        {"name": "data", "mountPath": path, "subPath": sub}
        for path, sub in VOLUME_PATHS[component].items()
    ]
    pod_spec: dict[str, Any] = {
        # MailU talks to nothing in the Kubernetes API.
        "automountServiceAccountToken": False,
        "securityContext": pod_security,
        "containers": [container],
        "volumes": [
            {
                "name": "data",
                "persistentVolumeClaim": {"claimName": claim_name(owner, mailu, component)},
            }
        ],
    }
    if tier is not None and tier.node_selector:
        pod_spec["nodeSelector"] = dict(tier.node_selector)
    if tier is not None and tier.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in tier.tolerations]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": owner.metadata(f"{owner.prefix}-{component}", component),
        "spec": {
            "replicas": replicas(mailu, component),
            # A ReadWriteOnce volume is never mounted by an old and a new pod at once (nor does
            # an update need quota room for a surge pod).
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": owner.selector(component)},
            "template": {"metadata": {"labels": owner.selector(component)}, "spec": pod_spec},
        },
    }


def _service(owner: Owner, component: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": owner.metadata(f"{owner.prefix}-{component}", component),
        "spec": {
            "selector": owner.selector(component),
            "ports": [
                {"name": name, "port": port, "targetPort": port}
                for name, port in COMPONENT_PORTS[component].items()
            ],
        },
    }


def _public_service(owner: Owner, mailu: MailuInClusterProvider) -> Manifest:
    spec: dict[str, Any] = {
        "type": mailu.service_type.value,
        "selector": owner.selector("front"),
        "ports": [
            {"name": name, "port": port, "targetPort": port} for name, port in MAIL_PORTS.items()
        ],
    }
    if mailu.service_type.value != "ClusterIP":
        # The real client address must reach MailU: see the module docstring (open relay).
        spec["externalTrafficPolicy"] = "Local"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": owner.metadata(public_service_name(owner), "front"),
        "spec": spec,
    }


def _network_policy(owner: Owner) -> Manifest:
    """The tenant namespace denies ingress by default: open mail ports on front, let the
    MailU components talk to each other, and let the operator's pods (the chart's labels, any
    namespace) reach the admin API, where it sets up mailboxes (mailu/mailboxes.py)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": owner.metadata(owner.prefix),
        "spec": {
            "podSelector": {"matchLabels": owner.selector()},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": owner.selector()}}]},
                {
                    "ports": [{"protocol": "TCP", "port": port} for port in MAIL_PORTS.values()],
                },
                {
                    "from": [
                        {
                            "namespaceSelector": {},
                            "podSelector": {"matchLabels": OPERATOR_POD_LABELS},
                        }
                    ],
                    "ports": [
                        {"protocol": "TCP", "port": port}
                        for port in COMPONENT_PORTS["admin"].values()
                    ],
                },
            ],
        },
    }
