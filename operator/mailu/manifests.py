"""MailU inside the cluster: the objects an SmtpServer with provider.mailuInCluster owns.

Pure functions of the SmtpServer, so every manifest is tested as data and applied with
server-side apply (applying again changes nothing). Everything carries an ownerReference to the
SmtpServer: deleting it removes MailU by garbage collection, even while the operator is down.

Port 25 goes through a LoadBalancer Service with ``externalTrafficPolicy: Local``. With the
default (Cluster) policy, kube-proxy SNATs incoming connections, so MailU sees a cluster address
as the client, and every cluster address is in MailU's trusted relay networks (SUBNET/RELAYNETS):
the whole Internet would be allowed to relay through it — an open relay, blocklisted within
hours (MailU issue #576). Local keeps the real client address. An HTTP ingress cannot carry SMTP.
Dovecot keeps its index on one volume and must not be scaled out: only front/smtp get replicas.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from penguinmails.api.v1alpha1.smtpserver import MailuInClusterProvider, SmtpServerSpec
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
SCALABLE = frozenset({"front", "smtp"})
VOLUME_PATHS = {
    "admin": {"/data": "data", "/dkim": "dkim"},
    "smtp": {"/queue": "mailqueue"},
    "imap": {"/mail": "mail"},
    "antispam": {"/var/lib/rspamd": "filter"},
    "redis": {"/data": "redis"},
    "front": {"/certs": "certs"},
}


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
            "ownerReferences": [
                {
                    "apiVersion": "penguinmails.io/v1alpha1",
                    "kind": "SmtpServer",
                    "name": self.name,
                    "uid": self.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
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


def manifests(owner: Owner, spec: SmtpServerSpec, secrets: MailuSecrets) -> list[Manifest]:
    """Every object of one in-cluster MailU, in an order that applies cleanly."""
    mailu = spec.provider.mailu_in_cluster
    assert mailu is not None, "spec.provider.mailuInCluster is not set"
    objects: list[Manifest] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": owner.metadata(f"{owner.prefix}-env"),
            "data": _env(owner, spec, secrets),
        },
        _volume(owner, mailu),
    ]
    for component in COMPONENT_PORTS:
        objects.append(_deployment(owner, mailu, component))
        objects.append(_service(owner, component))
    objects.append(_public_service(owner, mailu))
    objects.append(_network_policy(owner))
    return objects


def _volume(owner: Owner, mailu: MailuInClusterProvider) -> Manifest:
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": mailu.storage_size}},
    }
    if mailu.storage_class_name:
        spec["storageClassName"] = mailu.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": owner.metadata(f"{owner.prefix}-data"),
        "spec": spec,
    }


def _deployment(owner: Owner, mailu: MailuInClusterProvider, component: str) -> Manifest:
    secret = f"{owner.prefix}"
    container: dict[str, Any] = {
        "name": component,
        "image": image(component, mailu.version),
        "ports": [
            {"name": name[:15], "containerPort": port}
            for name, port in COMPONENT_PORTS[component].items()
        ],
        "resources": {
            "requests": {"cpu": "50m", "memory": "128Mi"},
            "limits": {"memory": "1Gi"},
        },
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
        for path, sub in VOLUME_PATHS.get(component, {}).items()
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": owner.metadata(f"{owner.prefix}-{component}", component),
        "spec": {
            "replicas": mailu.replicas if component in SCALABLE else 1,
            # One volume shared by the components: never two writers from a rolling update.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": owner.selector(component)},
            "template": {
                "metadata": {"labels": owner.selector(component)},
                "spec": {
                    "containers": [container],
                    "volumes": [
                        {
                            "name": "data",
                            "persistentVolumeClaim": {"claimName": f"{owner.prefix}-data"},
                        }
                    ],
                },
            },
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
    """The tenant namespace denies ingress by default: open mail ports on front, and let the
    MailU components talk to each other."""
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
            ],
        },
    }
