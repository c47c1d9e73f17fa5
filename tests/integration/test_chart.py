"""The Helm chart: lint, render, server-side dry-run, and the operator running under its RBAC.

helm is built from its upstream Go module (penguinmails.devstack.helm, cached); kubectl comes
with the control plane. The RBAC test proves both halves of least privilege: the operator
reconciles a Tenant with nothing but the chart's ClusterRole, and the same identity is refused
what it must never do.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client import ApiException

from penguinmails.api.v1alpha1.tiers import Tier
from penguinmails.devstack.controlplane import write_kubeconfig
from penguinmails.devstack.helm import CHART_DIR, build_helm
from penguinmails.devstack.stack import api_client_for, apply_documents
from penguinmails.operator import tenant_resources as res
from tests.integration.conftest import (
    GROUP,
    VERSION,
    Cluster,
    OperatorFactory,
    refusals,
    wait_for,
)
from tests.integration.smtpserver_helpers import (
    hostwinds_body,
    put_secret,
    ssh_private_key,
    wait_condition,
)
from tests.standins.hostwinds import HostwindsStandIn

pytestmark = pytest.mark.integration

OPTIONS = CHART_DIR / "ci" / "all-options-values.yaml"
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
# The admission policy that bounds the operator's writes to tenant namespaces (and its own).
POLICY_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
# Kinds whose CRDs come from elsewhere (the Prometheus Operator); not served by the test cluster.
FOREIGN_KINDS = {"ServiceMonitor"}

Document = dict[str, Any]


@dataclass(frozen=True)
class Helm:
    binary: Path
    env: dict[str, str]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.binary), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
        return result

    def template(
        self,
        release: str,
        namespace: str,
        *values: Path,
        sets: tuple[str, ...] = (),
        include_crds: bool = False,
    ) -> list[Document]:
        args = ["template", release, str(CHART_DIR), "--namespace", namespace]
        for path in values:
            args += ["--values", str(path)]
        for item in sets:
            args += ["--set", item]
        if include_crds:
            args.append("--include-crds")
        return [d for d in yaml.safe_load_all(self.run(*args).stdout) if d]


@pytest.fixture(scope="module")
def private_dir() -> Iterator[Path]:
    """Files that must outlive any test: not under pytest's basetemp, which a concurrent pytest
    session on the same machine may clean up (it keeps only the three newest)."""
    path = Path(tempfile.mkdtemp(prefix="penguinmails-chart-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def helm(private_dir: Path) -> Helm:
    home = private_dir / "helm-home"
    # A private helm home: no user repositories, plugins or registry logins, and no cluster.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("HELM_") and key != "KUBECONFIG"
    }
    env |= {
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    return Helm(build_helm(), env)


def suffix() -> str:
    return secrets.token_hex(3)


def by_kind(documents: list[Document], kind: str) -> list[Document]:
    return [d for d in documents if d["kind"] == kind]


def one(documents: list[Document], kind: str) -> Document:
    (found,) = by_kind(documents, kind)
    return found


def of_component(documents: list[Document], kind: str, component: str) -> Document:
    """The one object of `kind` whose app.kubernetes.io/component label is `component`."""
    (found,) = [
        d
        for d in by_kind(documents, kind)
        if d["metadata"]["labels"].get("app.kubernetes.io/component") == component
    ]
    return found


def operator_cluster_role(documents: list[Document]) -> Document:
    """The operator's ClusterRole (not <release>-secret-writer, bound per namespace)."""
    (found,) = [
        d
        for d in by_kind(documents, "ClusterRole")
        if not d["metadata"]["name"].endswith("-secret-writer")
    ]
    return found


def env_of(container: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


# --- the chart on its own: CRDs, lint, render, schema ---------------------------------------------


def test_lint_is_clean_with_defaults_and_with_every_option(helm: Helm) -> None:
    for extra in ([], ["--values", str(OPTIONS)]):
        result = helm.run("lint", "--strict", str(CHART_DIR), *extra)
        assert "0 chart(s) failed" in result.stdout, result.stdout


def test_defaults_render_a_locked_down_single_operator(helm: Helm) -> None:
    documents = helm.template("pm", "penguinmails-system")
    assert sorted(d["kind"] for d in documents) == [
        "ClusterRole",
        "ClusterRole",  # <release>-secret-writer, bound only per tenant namespace
        "ClusterRoleBinding",
        "Deployment",
        "PodDisruptionBudget",
        "Role",  # the leader-election Lease
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicy",  # <release>-inuse-guard
        "ValidatingAdmissionPolicyBinding",
        "ValidatingAdmissionPolicyBinding",
    ]
    assert not by_kind(documents, "Secret"), "the chart must never carry a secret value"
    # The operator-scope admission policy binds the operator's ServiceAccount, and only it.
    (policy,) = [
        d
        for d in by_kind(documents, "ValidatingAdmissionPolicy")
        if d["metadata"]["name"].endswith("-operator-scope")
    ]
    account = one(documents, "ServiceAccount")["metadata"]["name"]
    assert policy["spec"]["matchConditions"] == [
        {
            "name": "operator-service-account",
            "expression": 'request.userInfo.username == "system:serviceaccount:'
            f'penguinmails-system:{account}"',
        }
    ]
    assert policy["spec"]["failurePolicy"] == "Fail"
    (policy_binding,) = [
        d["spec"]
        for d in by_kind(documents, "ValidatingAdmissionPolicyBinding")
        if d["spec"]["policyName"] == policy["metadata"]["name"]
    ]
    assert policy_binding == {
        "policyName": policy["metadata"]["name"],
        "validationActions": ["Deny"],
    }
    # The unsubscribe endpoint and the intake need sender.secretName, empty by default.
    assert {d["metadata"]["labels"]["app.kubernetes.io/component"] for d in documents} == {
        "operator"
    }

    deployment = one(documents, "Deployment")
    spec = deployment["spec"]
    # Two replicas, one leading on a Lease; a rollout adds a standby before removing a pod.
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    budget = one(documents, "PodDisruptionBudget")["spec"]
    assert budget["minAvailable"] == 1
    assert budget["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    (lease_rule, named_rule) = one(documents, "Role")["rules"]
    assert lease_rule == {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "verbs": ["create"],
    }
    assert named_rule["resourceNames"] == ["pm-penguinmails-leader"]
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == one(documents, "ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["command"] == ["penguinmails-operator"]
    assert container["image"] == "ghcr.io/penguinmails/penguinmails:0.1.0"
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    assert "--liveness=http://0.0.0.0:8081/healthz" in container["args"]

    env = env_of(container)
    assert env["PM_DATABASE_URL"] == {
        "name": "PM_DATABASE_URL",
        "valueFrom": {"secretKeyRef": {"name": "penguinmails-database", "key": "url"}},
    }
    assert env["PM_SENDER_IMAGE"]["value"] == "ghcr.io/penguinmails/penguinmails:0.1.0"
    assert env["PM_RESYNC_SECONDS"]["value"] == "60"
    assert env["PM_TENANT_RETENTION_DAYS"]["value"] == "30"
    assert env["PM_PURGE_INTERVAL_SECONDS"]["value"] == "3600"
    assert env["PM_METRICS_PORT"]["value"] == "8080"
    assert "PM_UNSUBSCRIBE_URL" not in env  # the operator's built-in default
    assert env["PM_LEADER_LEASE"]["value"] == "penguinmails-system/pm-penguinmails-leader"
    assert env["PM_LEADER_IDENTITY"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["PM_LEADER_LEASE_SECONDS"]["value"] == "15"
    assert env["PM_KUBE_READ_TIMEOUT_SECONDS"]["value"] == "30"

    service = one(documents, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]
    pod_labels = spec["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()


def test_every_option_renders(helm: Helm) -> None:
    documents = helm.template("pm", "platform", OPTIONS)
    deployment = of_component(documents, "Deployment", "operator")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert deployment["metadata"]["name"] == "pm"
    assert deployment["spec"]["replicas"] == 0
    assert container["image"].startswith("registry.example.com/platform/penguinmails@sha256:")
    assert container["imagePullPolicy"] == "Always"
    assert "--verbose" in container["args"]
    env = env_of(container)
    assert env["PM_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "pg-app", "key": "uri"}
    assert env["PM_SENDER_IMAGE"]["value"] == (
        "registry.example.com/platform/penguinmails-sender:0.1.0-rc.2"
    )
    assert env["PM_RESYNC_SECONDS"]["value"] == "120"
    assert env["PM_TENANT_RETENTION_DAYS"]["value"] == "7.5"
    assert env["PM_PURGE_INTERVAL_SECONDS"]["value"] == "900"
    assert env["PM_HOSTWINDS_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "hostwinds"
    assert env["PM_SPAMHAUS_DQS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "spamhaus-dqs",
        "key": "key",
    }
    assert env["PM_HOSTWINDS_CREATE_SETTLE_SECONDS"]["value"] == "900"
    assert env["PM_UNSUBSCRIBE_URL"]["value"] == "https://unsubscribe.example.com/u"
    assert env["PM_TENANT_DATABASE_PORTS"]["value"] == "5432,6432"
    assert env["PM_TENANT_APISERVER_CIDRS"]["value"] == "192.168.1.10/32"
    assert env["PM_CLUSTER_CIDRS"]["value"] == "10.244.0.0/16,10.96.0.0/12"
    assert env["PM_EGRESS_ALLOW"]["value"] == "10.99.0.0/24"
    # Billing: the operator only reports overage, so it gets the key but not the webhook's secret.
    assert env["PM_STRIPE_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "penguinmails-stripe",
        "key": "apiKey",
    }
    assert env["PM_STRIPE_API_BASE"]["value"] == "https://stripe-proxy.example.com"
    assert env["PM_STRIPE_METER_EVENT"]["value"] == "pm_emails"
    assert "PM_STRIPE_WEBHOOK_SECRET" not in env
    assert pod["serviceAccountName"] == "penguinmails-operator"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert container["livenessProbe"]["failureThreshold"] == 5
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "metrics": 9090,
        "health": 9091,
    }

    monitor = one(documents, "ServiceMonitor")
    service = of_component(documents, "Service", "operator")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert service["metadata"]["annotations"] == {"prometheus.io/scrape": "true"}
    binding = one(documents, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "penguinmails-operator", "namespace": "platform"}
    ]


def test_billing_reaches_the_api_and_the_operator_only_when_its_secret_is_named(
    helm: Helm,
) -> None:
    api = ("api.enabled=true", "api.secretName=penguinmails-api")
    off = helm.template("pm", "platform", sets=api)
    for component in ("operator", "api"):
        (container,) = of_component(off, "Deployment", component)["spec"]["template"]["spec"][
            "containers"
        ]
        assert not [n for n in env_of(container) if n.startswith("PM_STRIPE_")], component
    api_role = of_component(off, "ClusterRole", "api")
    # Tenants: read and patched for platform administrators (/v1/admin), billing or not.
    assert _covers(api_role["rules"], "penguinmails.io", "tenants", "patch")
    assert not _covers(api_role["rules"], "penguinmails.io", "tenants", "create")
    assert not _covers(api_role["rules"], "penguinmails.io", "tenants", "delete")

    on = helm.template("pm", "platform", OPTIONS, sets=api)
    (container,) = of_component(on, "Deployment", "api")["spec"]["template"]["spec"]["containers"]
    env = env_of(container)
    for name, key in (
        ("PM_STRIPE_API_KEY", "apiKey"),
        ("PM_STRIPE_WEBHOOK_SECRET", "webhookSecret"),
    ):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "penguinmails-stripe", "key": key}
    # The billing code's own narrow login (penguinmails_billing), not the platform's.
    assert env["PM_BILLING_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "pg-billing",
        "key": "uri",
    }
    assert env["PM_STRIPE_WEBHOOK_TOLERANCE_SECONDS"]["value"] == "120"
    assert env["PM_STRIPE_GRACE_SECONDS"]["value"] == "86400"
    assert env["PM_STRIPE_PORTAL_RETURN_URL"]["value"] == "https://app.example.com/billing"
    # The webhook and platform administrators change Tenants (tier, suspension): get, list
    # and patch, nothing more.
    rules = of_component(on, "ClusterRole", "api")["rules"]
    tenant_verbs = {
        verb
        for rule in rules
        if "tenants" in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }
    assert tenant_verbs == {"get", "list", "patch"}

    # The operator purges old Stripe events and e-mails usage notices through the relay named.
    (operator,) = of_component(on, "Deployment", "operator")["spec"]["template"]["spec"][
        "containers"
    ]
    env = env_of(operator)
    assert env["PM_BILLING_EVENT_RETENTION_DAYS"]["value"] == "45"
    assert env["PM_NOTICE_SMTP_HOST"]["value"] == "relay.example.com"
    assert env["PM_NOTICE_SMTP_TLS"]["value"] == "tls"
    assert env["PM_NOTICE_SMTP_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "notice-relay",
        "key": "password",
    }
    (operator,) = of_component(off, "Deployment", "operator")["spec"]["template"]["spec"][
        "containers"
    ]
    env = env_of(operator)
    assert env["PM_BILLING_EVENT_RETENTION_DAYS"]["value"] == "30"
    assert not [n for n in env if n.startswith("PM_NOTICE_")]


def _locked_down(pod: Mapping[str, Any], container: Mapping[str, Any]) -> None:
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    # Secret values only from Secrets: every variable is a secretKeyRef.
    for item in container["env"]:
        assert set(item) == {"name", "valueFrom"}, item
        assert set(item["valueFrom"]) == {"secretKeyRef"}, item


def test_unsubscribe_and_intake_render_with_every_option(helm: Helm) -> None:
    documents = helm.template("pm", "platform", OPTIONS)
    for component, port_name, port in (("unsubscribe", "http", 8089), ("intake", "smtp", 2526)):
        account = of_component(documents, "ServiceAccount", component)
        assert account["metadata"]["name"] == f"pm-{component}"
        assert account["automountServiceAccountToken"] is False
        deployment = of_component(documents, "Deployment", component)
        assert deployment["metadata"]["name"] == f"pm-{component}"
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == f"pm-{component}"
        (container,) = pod["containers"]
        _locked_down(pod, container)
        assert container["ports"] == [{"name": port_name, "containerPort": port, "protocol": "TCP"}]
        assert container["args"][-2:] == ["--port", str(port)]
        assert container["imagePullPolicy"] == "Always"
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
        assert pod["tolerations"][0]["key"] == "edge"
        assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
        assert "example.com/tier" in deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["template"]["metadata"]["annotations"] == {
            "example.com/owner": "deliverability"
        }
        env = env_of(container)
        assert env["PM_SUPPRESSION_KEY"]["valueFrom"]["secretKeyRef"] == {
            "name": "penguinmails-sender",
            "key": "PM_SUPPRESSION_KEY",
        }
        service = of_component(documents, "Service", component)
        assert service["spec"]["ports"][0]["targetPort"] == port_name
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        operator_labels = of_component(documents, "Deployment", "operator")["spec"]["template"]
        assert (
            not service["spec"]["selector"].items() <= operator_labels["metadata"]["labels"].items()
        )

    unsubscribe = of_component(documents, "Deployment", "unsubscribe")
    assert unsubscribe["spec"]["replicas"] == 3
    pod = unsubscribe["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["penguinmails"]
    assert container["args"][:2] == ["unsubscribe", "serve"]
    assert container["image"].startswith("registry.example.com/platform/penguinmails@sha256:")
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert env_of(container)["PM_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "pg-app",
        "key": "uri",
    }
    assert pod["terminationGracePeriodSeconds"] == 5
    service = of_component(documents, "Service", "unsubscribe")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"][0]["port"] == 8080
    ingress = one(documents, "Ingress")
    assert ingress["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "letsencrypt"}
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [
        {"hosts": ["unsubscribe.example.com"], "secretName": "unsubscribe-example-com-tls"}
    ]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "unsubscribe.example.com"
    assert rule["http"]["paths"] == [
        {
            "path": "/u",
            "pathType": "Prefix",
            "backend": {"service": {"name": "pm-unsubscribe", "port": {"name": "http"}}},
        }
    ]

    intake = of_component(documents, "Deployment", "intake")
    assert intake["spec"]["replicas"] == 2
    pod = intake["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["penguinmails-sender"]
    assert container["args"][0] == "intake"
    assert container["image"] == "registry.example.com/platform/penguinmails-sender:0.1.0-rc.2"
    # No health endpoint in the intake: the probes only check that the SMTP port accepts.
    assert container["livenessProbe"]["tcpSocket"] == {"port": "smtp"}
    assert container["readinessProbe"]["tcpSocket"] == {"port": "smtp"}
    assert env_of(container)["PM_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "penguinmails-sender",
        "key": "PM_DATABASE_URL",
    }
    assert pod["terminationGracePeriodSeconds"] == 45
    service = of_component(documents, "Service", "intake")
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["ports"][0]["port"] == 25
    assert service["metadata"]["annotations"] == {
        "service.beta.kubernetes.io/aws-load-balancer-type": "nlb"
    }


def test_webhook_dispatcher_comes_with_the_api_or_alone(helm: Helm) -> None:
    def dispatchers(*sets: str) -> list[Document]:
        return [
            d
            for d in helm.template("pm", "platform", sets=sets)
            if d["metadata"]["labels"].get("app.kubernetes.io/component") == "webhook-dispatcher"
        ]

    assert dispatchers() == []  # off by default, like the API
    with_api = dispatchers("api.enabled=true", "api.secretName=api")
    assert sorted(d["kind"] for d in with_api) == ["Deployment", "ServiceAccount"]
    alone = dispatchers("webhookDispatcher.enabled=true", "webhookDispatcher.rescanSeconds=15")
    deployment = one(alone, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False  # PostgreSQL only, no Kubernetes API
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "penguinmails.common.webhook_dispatch"]
    env = {e["name"]: e for e in container["env"]}
    # The platform's login (the operator's Secret), never a tenant's.
    assert env["PM_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "penguinmails-database"
    assert env["PM_WEBHOOK_RESCAN_SECONDS"]["value"] == "15"
    assert {"PM_CLUSTER_CIDRS", "PM_EGRESS_ALLOW"} <= set(env)


def test_unsubscribe_url_follows_the_ingress_host(helm: Helm) -> None:
    documents = helm.template(
        "pm",
        "ns",
        sets=(
            "sender.secretName=pm-sender",
            "unsubscribe.enabled=true",
            "unsubscribe.ingress.enabled=true",
            "unsubscribe.ingress.host=u.example.org",
            "unsubscribe.ingress.tlsSecretName=u-tls",
        ),
    )
    operator = of_component(documents, "Deployment", "operator")
    env = env_of(operator["spec"]["template"]["spec"]["containers"][0])
    assert env["PM_UNSUBSCRIBE_URL"]["value"] == "https://u.example.org/u"
    unsubscribe = of_component(documents, "Deployment", "unsubscribe")
    container = unsubscribe["spec"]["template"]["spec"]["containers"][0]
    # The default: the components' database login from the sender Secret.
    assert env_of(container)["PM_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "pm-sender",
        "key": "PM_DATABASE_URL",
    }
    assert container["ports"][0]["containerPort"] == 8088
    # No permissions: nothing binds a role to the components' ServiceAccounts.
    bound = {
        subject["name"]
        for kind in ("ClusterRoleBinding", "RoleBinding")
        for binding in by_kind(documents, kind)
        for subject in binding["subjects"]
    }
    assert bound == {"pm-penguinmails"}


def test_the_sender_image_follows_the_operator_image_unless_set(helm: Helm) -> None:
    documents = helm.template(
        "pm", "ns", sets=("image.repository=example.com/pm", "image.tag=1.2.3")
    )
    env = env_of(one(documents, "Deployment")["spec"]["template"]["spec"]["containers"][0])
    assert env["PM_SENDER_IMAGE"]["value"] == "example.com/pm:1.2.3"


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ('replicas: "two"', "/replicas"),
        ("replicas: -1", "/replicas"),
        ("leaderElection: {leaseDurationSeconds: 1}", "/leaderElection/leaseDurationSeconds"),
        ("podDisruptionBudget: {minAvailable: one}", "/podDisruptionBudget/minAvailable"),
        ("operator: {kubeClient: {readTimeoutSeconds: 0}}", "/operator/kubeClient"),
        ("replicass: 1", "replicass"),
        ("database: {url: postgresql://u:p@db/pm}", "url"),
        ("image: {pullPolicy: Sometimes}", "/image/pullPolicy"),
        ("image: {digest: latest}", "/image/digest"),
        ("metrics: {port: 0}", "/metrics/port"),
        ("operator: {resyncSeconds: 0}", "/operator/resyncSeconds"),
        ("operator: {extraEnv: [{name: PM_DATABASE_URL, value: x}]}", "/operator/extraEnv/0/name"),
        # The components need PM_SUPPRESSION_KEY, which only the sender Secret holds.
        ("unsubscribe: {enabled: true}", "/sender/secretName"),
        ("intake: {enabled: true}", "/sender/secretName"),
        ("unsubscribe: {databaseUrlFrom: inline}", "/unsubscribe/databaseUrlFrom"),
        ("unsubscribe: {publicUrl: 'http://u.example.com/u'}", "/unsubscribe/publicUrl"),
        ("unsubscribe: {port: 80}", "/unsubscribe/port"),
        ("unsubscribe: {ingress: {enabled: true, tlsSecretName: t}}", "/unsubscribe/ingress"),
        ("unsubscribe: {ingress: {enabled: true, host: u.example.com}}", "/unsubscribe/ingress"),
        ("unsubscribe: {ingress: {host: 'https://u.example.com'}}", "/unsubscribe/ingress/host"),
        ("unsubscribe: {token: x}", "token"),
        ("intake: {replicas: -1}", "/intake/replicas"),
        ("intake: {service: {type: ExternalName}}", "/intake/service/type"),
        ("intake: {service: {port: 0}}", "/intake/service/port"),
        ("intake: {resources: {limits: {memory: lots}}}", "/intake/resources/limits/memory"),
    ],
)
def test_schema_rejects_bad_values_naming_the_field(
    helm: Helm, tmp_path: Path, values: str, field: str
) -> None:
    bad = tmp_path / "bad-values.yaml"
    bad.write_text(values + "\n")
    result = helm.run("template", "pm", str(CHART_DIR), "--values", str(bad), check=False)
    assert result.returncode != 0, f"{values!r} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert field in result.stderr, result.stderr


def test_inconsistent_options_fail_with_a_message(helm: Helm) -> None:
    result = helm.run(
        "template", "pm", str(CHART_DIR), "--set", "serviceAccount.create=false", check=False
    )
    assert result.returncode != 0
    assert "serviceAccount.name is required" in result.stderr
    result = helm.run(
        "template",
        "pm",
        str(CHART_DIR),
        "--set",
        "metrics.serviceMonitor.enabled=true,metrics.service.enabled=false",
        check=False,
    )
    assert result.returncode != 0
    assert "metrics.service.enabled" in result.stderr
    result = helm.run(
        "template",
        "pm",
        str(CHART_DIR),
        "--set",
        "unsubscribe.ingress.enabled=true,unsubscribe.ingress.host=u.example.com",
        "--set",
        "unsubscribe.ingress.tlsSecretName=u-tls",
        check=False,
    )
    assert result.returncode != 0
    assert "unsubscribe.ingress.enabled needs unsubscribe.enabled" in result.stderr
    result = helm.run(
        "template", "pm", str(CHART_DIR), "--set", "leaderElection.enabled=false", check=False
    )
    assert result.returncode != 0
    assert "replicas > 1 needs leaderElection.enabled" in result.stderr


def _covers(rules: list[Mapping[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(
        group in rule.get("apiGroups", [])
        and resource in rule.get("resources", [])
        and verb in rule.get("verbs", [])
        for rule in rules
    )


def test_cluster_role_holds_everything_the_sender_role_grants(helm: Helm) -> None:
    """RBAC lets nobody grant what it does not hold: the operator creates this Role per tenant."""
    rules = operator_cluster_role(helm.template("pm", "ns"))["rules"]
    tenant = res.TenantRef(name="x", uid="0", tier=Tier.STARTER)
    missing = [
        f"{group or 'core'}/{resource}:{verb}"
        for rule in res.role(tenant)["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        if not _covers(rules, group, resource, verb)
    ]
    assert not missing, f"the ClusterRole lacks what the sender Role grants: {missing}"
    # Nothing in the ClusterRole is a wildcard.
    for rule in rules:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key], rule


# --- against the real API server ------------------------------------------------------------------


@pytest.fixture(scope="module")
def release_namespace(core: client.CoreV1Api) -> Iterator[str]:
    name = f"pm-chart-{suffix()}"
    # The `restricted` Pod Security Standard: the API server warns about any pod template of the
    # chart that would violate it (enforcement itself applies to pods, which a dry run has none).
    labels = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn")}
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
    )
    yield name
    core.delete_namespace(name)


def kubectl_dry_run(cluster: Cluster, documents: list[Document]) -> str:
    result = subprocess.run(
        [
            str(cluster.kubectl),
            "--kubeconfig",
            str(cluster.kubeconfig),
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=helm",
            "--dry-run=server",
            "--filename=-",
        ],
        input=yaml.safe_dump_all(documents),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"server-side dry-run refused the chart:\n{result.stderr}"
    assert "PodSecurity" not in result.stderr, f"violates the restricted standard:\n{result.stderr}"
    return result.stdout


@pytest.mark.parametrize("with_options", [False, True], ids=["defaults", "all-options"])
def test_api_server_accepts_the_rendered_chart_in_a_dry_run(
    helm: Helm,
    cluster: Cluster,
    api_client: client.ApiClient,
    crds_installed: list[str],
    release_namespace: str,
    with_options: bool,
) -> None:
    values = (OPTIONS,) if with_options else ()
    documents = helm.template(f"dry-{suffix()}", release_namespace, *values, include_crds=True)
    assert len(by_kind(documents, "CustomResourceDefinition")) == len(crds_installed)
    served = [d for d in documents if d["kind"] not in FOREIGN_KINDS]
    components = {
        (d["kind"], d["metadata"]["labels"]["app.kubernetes.io/component"])
        for d in served
        if d["kind"] != "CustomResourceDefinition"
    }
    if with_options:  # the unsubscribe endpoint and the intake are in the dry run
        for component in ("unsubscribe", "intake"):
            for kind in ("ServiceAccount", "Deployment", "Service"):
                assert (kind, component) in components, (kind, component)
        assert ("Ingress", "unsubscribe") in components
    output = kubectl_dry_run(cluster, served)
    for document in served:
        # kind and name: the Deployment, Service and Ingress of a component share a name.
        kind, name = document["kind"].lower(), document["metadata"]["name"]
        applied = (
            rf"(?m)^{kind}(\.[a-z0-9.-]+)?/{re.escape(name)} serverside-applied \(server dry run\)"
        )
        assert re.search(applied, output), f"{document['kind']} {name} not in:\n{output}"
    rbac = client.RbacAuthorizationV1Api(api_client)
    cluster_role = by_kind(served, "ClusterRole")[0]["metadata"]["name"]
    with pytest.raises(ApiException) as raised:  # a dry run leaves nothing behind
        rbac.read_cluster_role(cluster_role)
    assert raised.value.status == 404


@dataclass(frozen=True)
class ChartIdentity:
    namespace: str
    service_account: str
    kubeconfig: Path
    lease: str
    """The leader-election Lease the chart's Deployment names (`namespace/name`)."""
    documents: list[Document]
    """The chart's RBAC and admission policy documents, as applied."""


def policy_refusal(request: Callable[[], object]) -> str:
    """The message when the chart's admission policy refused `request`, else ""."""
    try:
        request()
    except ApiException as error:
        if error.status == 403 and "ValidatingAdmissionPolicy" in str(error.body):
            return str(error.body)
        if error.status != 403:
            raise
    return ""


def _deployment() -> Document:
    labels = {"app": "intruder"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "intruder"},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    }


def _secret_writer(documents: list[Document]) -> str:
    (role,) = [
        d["metadata"]["name"]
        for d in by_kind(documents, "ClusterRole")
        if d["metadata"]["name"].endswith("-secret-writer")
    ]
    return str(role)


def _bind_secret_writer(api: client.ApiClient, documents: list[Document], namespace: str) -> object:
    """What operator/secret_access.py does before writing a Secret, as a dry run."""
    account = one(documents, "ServiceAccount")["metadata"]
    body = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "penguinmails-operator-secret-writer", "namespace": namespace},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": _secret_writer(documents),
        },
        "subjects": [
            {
                "kind": "ServiceAccount",
                "name": account["name"],
                "namespace": account["namespace"],
            }
        ],
    }
    return client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(
        namespace, body, dry_run="All"
    )


@pytest.fixture(scope="module")
def chart_identity(
    helm: Helm,
    cluster: Cluster,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    release_namespace: str,
    private_dir: Path,
) -> Iterator[ChartIdentity]:
    """The chart's ServiceAccount, ClusterRole and binding, applied for real, and a token for it."""
    documents = helm.template(f"pm-rbac-{suffix()}", release_namespace)
    rbac_documents = [d for d in documents if d["kind"] in RBAC_KINDS + POLICY_KINDS]
    assert set(d["kind"] for d in rbac_documents) == set(RBAC_KINDS + POLICY_KINDS)
    apply_documents(api_client, rbac_documents)
    account = one(rbac_documents, "ServiceAccount")["metadata"]["name"]
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    issued = core.create_namespaced_service_account_token(account, release_namespace, request)
    assert issued.status is not None and issued.status.token
    kubeconfig = private_dir / "operator.kubeconfig"
    write_kubeconfig(kubeconfig, cluster.server, str(issued.status.token), cluster.ca_file)
    deployment = one(documents, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    lease = env_of(deployment)["PM_LEADER_LEASE"]["value"]
    # The API server loads a new policy asynchronously: every test here must run under it.
    with api_client_for(kubeconfig) as api:
        wait_for(
            lambda: policy_refusal(lambda: _bind_secret_writer(api, documents, "default")),
            timeout=30,
            what="the operator-scope admission policy in force",
        )
    yield ChartIdentity(release_namespace, account, kubeconfig, lease, rbac_documents)
    admission = client.AdmissionregistrationV1Api(api_client)
    for binding in by_kind(rbac_documents, "ValidatingAdmissionPolicyBinding"):
        admission.delete_validating_admission_policy_binding(binding["metadata"]["name"])
    for policy in by_kind(rbac_documents, "ValidatingAdmissionPolicy"):
        admission.delete_validating_admission_policy(policy["metadata"]["name"])
    rbac = client.RbacAuthorizationV1Api(api_client)
    for binding in by_kind(rbac_documents, "RoleBinding"):
        rbac.delete_namespaced_role_binding(binding["metadata"]["name"], release_namespace)
    for role in by_kind(rbac_documents, "Role"):
        rbac.delete_namespaced_role(role["metadata"]["name"], release_namespace)
    for binding in by_kind(rbac_documents, "ClusterRoleBinding"):
        rbac.delete_cluster_role_binding(binding["metadata"]["name"])
    for role in by_kind(rbac_documents, "ClusterRole"):
        rbac.delete_cluster_role(role["metadata"]["name"])


def test_operator_reconciles_a_tenant_with_only_the_chart_rbac(
    chart_identity: ChartIdentity,
    operator_process: OperatorFactory,
    api_client: client.ApiClient,
    custom_objects: client.CustomObjectsApi,
) -> None:
    # KUBECONFIG as well as PM_KUBECONFIG: kopf's own login reads KUBECONFIG, and every request
    # the operator makes must carry the ServiceAccount's token, or the test proves nothing.
    # With the chart's leader election too: its Role must let the operator take the Lease.
    operator = operator_process(
        kubeconfig=chart_identity.kubeconfig,
        KUBECONFIG=str(chart_identity.kubeconfig),
        PM_LEADER_LEASE=chart_identity.lease,
    )
    assert operator.env["PM_KUBECONFIG"] == operator.env["KUBECONFIG"]
    assert "KUBERNETES_SERVICE_HOST" not in operator.env
    name = f"chart-{suffix()}"
    namespace = res.namespace_for(name)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Tenant",
        "metadata": {"name": name},
        "spec": {"tier": "starter", "contactEmail": f"ops@{name}.example.com"},
    }
    custom_objects.create_cluster_custom_object(GROUP, VERSION, "tenants", body)
    try:

        def ready() -> dict[str, Any] | None:
            obj: Any = custom_objects.get_cluster_custom_object(GROUP, VERSION, "tenants", name)
            status = obj.get("status") or {}
            current = status.get("observedGeneration") == obj["metadata"]["generation"]
            for item in status.get("conditions") or []:
                if item["type"] == "Ready" and item["status"] == "True" and current:
                    return dict(obj)
            return None

        try:
            wait_for(ready, timeout=90, what=f"Tenant {name} Ready under the chart's RBAC")
        except AssertionError as error:
            raise AssertionError(f"{error}\noperator log:\n{operator.log()[-6000:]}") from None

        core = client.CoreV1Api(api_client)
        labels = (core.read_namespace(namespace).metadata or client.V1ObjectMeta()).labels
        assert (labels or {}).get(res.TENANT_LABEL) == name
        assert core.read_namespaced_resource_quota("penguinmails-tier", namespace)
        assert core.read_namespaced_limit_range("penguinmails-tier", namespace)
        assert core.read_namespaced_service_account(res.SENDER_NAME, namespace)
        networking = client.NetworkingV1Api(api_client)
        assert networking.read_namespaced_network_policy("default-deny-ingress", namespace)
        # The egress rules as built (the API server accepted them; the local cluster has no CNI
        # that enforces NetworkPolicy, so what is enforced is not checked here).
        egress = networking.read_namespaced_network_policy("egress", namespace).spec
        assert egress is not None and egress.policy_types == ["Egress"]
        built = res.egress_policy(res.TenantRef(name, "", Tier.STARTER), res.TenantEgress())
        assert [sorted(p.port for p in rule.ports) for rule in egress.egress or []] == [
            sorted(p["port"] for p in rule["ports"]) for rule in built["spec"]["egress"]
        ]
        rbac = client.RbacAuthorizationV1Api(api_client)
        assert rbac.read_namespaced_role(res.SENDER_NAME, namespace).rules
        assert rbac.read_namespaced_role_binding(res.SENDER_NAME, namespace)
        assert client.AppsV1Api(api_client).read_namespaced_deployment(res.SENDER_NAME, namespace)
        scheduling = client.SchedulingV1Api(api_client)
        for priority_class in res.priority_classes():
            assert scheduling.read_priority_class(priority_class["metadata"]["name"])

        # Deletion runs the cleanup handler (delete the namespace) and removes the finalizer.
        custom_objects.delete_cluster_custom_object(GROUP, VERSION, "tenants", name)

        def gone() -> bool:
            try:
                custom_objects.get_cluster_custom_object(GROUP, VERSION, "tenants", name)
            except ApiException as error:
                return bool(error.status == 404)
            return False

        wait_for(gone, timeout=60, what=f"Tenant {name} deleted by its finalizer")

        def namespace_terminating() -> bool:
            try:
                found = core.read_namespace(namespace)
            except ApiException as error:
                return bool(error.status == 404)
            return found.metadata is not None and found.metadata.deletion_timestamp is not None

        wait_for(namespace_terminating, timeout=30, what=f"namespace {namespace} deleted")
    finally:
        try:
            custom_objects.delete_cluster_custom_object(GROUP, VERSION, "tenants", name)
        except ApiException as error:
            if error.status != 404:
                raise
        operator.stop()

    log = operator.log()
    for handler in ("tenants-changed", "tenants-deleted"):
        assert f"Handler '{handler}' succeeded" in log, log[-4000:]
    found = refusals(log, namespace)
    assert not found, "operator log has refusals:\n" + "\n".join(found[-20:])
    operator.assert_no_errors()


def test_tenant_with_a_hostwinds_vps_is_deleted_with_only_the_chart_rbac(
    chart_identity: ChartIdentity,
    operator_process: OperatorFactory,
    api_client: client.ApiClient,
    custom_objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
) -> None:
    """The SmtpServer holds its API-key Secret through the secret-writer binding, which namespace
    deletion removes as well: the VPS is terminated and the namespace still goes."""
    rbac = client.RbacAuthorizationV1Api(api_client)
    (writer_role,) = [
        r.metadata.name
        for r in rbac.list_cluster_role().items
        if r.metadata.name.startswith("pm-rbac-") and r.metadata.name.endswith("-secret-writer")
    ]
    with HostwindsStandIn({"chart-key"}, provision_seconds=0.5) as standin:
        operator = operator_process(
            kubeconfig=chart_identity.kubeconfig,
            KUBECONFIG=str(chart_identity.kubeconfig),
            PM_SECRET_WRITER_CLUSTERROLE=writer_role,
            PM_OPERATOR_SERVICE_ACCOUNT=f"{chart_identity.namespace}/{chart_identity.service_account}",
            PM_HOSTWINDS_URL=standin.url,
            PM_HOSTWINDS_RPS="50",
            PM_SMTP_POLL_SECONDS="0.5",
            PM_SMTP_PROBE_SECONDS="0",
            PM_MAILU_INSTALL="false",
        )
        name = f"chart-hw-{suffix()}"
        namespace = res.namespace_for(name)
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Tenant",
            "metadata": {"name": name},
            "spec": {"tier": "starter", "contactEmail": f"ops@{name}.example.com"},
        }
        try:
            custom_objects.create_cluster_custom_object(GROUP, VERSION, "tenants", body)
            wait_for(lambda: namespace_exists(core, namespace), timeout=90, what=f"{namespace}")
            put_secret(core, namespace, "hostwinds", {"apiKey": "chart-key"})
            put_secret(core, namespace, "vps-ssh", {"id_ed25519": ssh_private_key()})
            server = hostwinds_body("mx", "mx.chart.example.com")
            server["spec"]["provider"]["hostwinds"]["apiKeySecretRef"]["name"] = "hostwinds"
            custom_objects.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "smtpservers", server
            )
            try:
                wait_condition(custom_objects, namespace, "mx", "Provisioned", "True", timeout=90)
            except AssertionError as error:
                raise AssertionError(f"{error}\n{operator.log()[-6000:]}") from None
            assert len(standin.live()) == 1
            custom_objects.delete_cluster_custom_object(GROUP, VERSION, "tenants", name)
            try:
                wait_for(
                    lambda: not namespace_exists(core, namespace),
                    timeout=120,
                    what=f"{namespace} deleted",
                )
            except AssertionError as error:
                raise AssertionError(f"{error}\n{operator.log()[-6000:]}") from None
            assert standin.live() == [], "the VPS must be terminated, not left billing"
        finally:
            operator.stop()
    assert "Not enough permissions" not in operator.log()


def namespace_exists(core: client.CoreV1Api, name: str) -> bool:
    try:
        core.read_namespace(name)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


# (verb, group, resource, subresource, namespace): what the operator must never be able to do.
FORBIDDEN = [
    ("create", "apiextensions.k8s.io", "customresourcedefinitions", "", None),
    ("patch", "apiextensions.k8s.io", "customresourcedefinitions", "", None),
    ("delete", "apiextensions.k8s.io", "customresourcedefinitions", "", None),
    ("list", "", "secrets", "", None),
    ("watch", "", "secrets", "", None),
    ("list", "", "secrets", "", "kube-system"),
    ("create", "", "secrets", "", "default"),
    ("create", "", "pods", "", "default"),
    ("create", "", "pods", "exec", "default"),
    ("get", "", "pods", "log", "default"),
    ("create", "", "serviceaccounts", "token", "kube-system"),
    ("create", "penguinmails.io", "tenants", "", None),
    ("update", "penguinmails.io", "tenants", "", None),
    ("delete", "penguinmails.io", "tenants", "", None),
    ("delete", "penguinmails.io", "campaigns", "", "default"),
    ("create", "rbac.authorization.k8s.io", "clusterroles", "", None),
    ("create", "rbac.authorization.k8s.io", "clusterrolebindings", "", None),
    ("escalate", "rbac.authorization.k8s.io", "roles", "", "default"),
    ("bind", "rbac.authorization.k8s.io", "clusterroles", "", None),
    ("impersonate", "", "serviceaccounts", "", "kube-system"),
    ("impersonate", "", "users", "", None),
    ("delete", "scheduling.k8s.io", "priorityclasses", "", None),
    ("patch", "", "nodes", "", None),
    ("create", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", None),
    ("create", "apps", "daemonsets", "", "default"),
    ("delete", "apps", "deployments", "", "kube-system"),
    ("delete", "rbac.authorization.k8s.io", "rolebindings", "", "kube-system"),
    ("delete", "", "serviceaccounts", "", "kube-system"),
]
# And what it needs: a sanity check that the reviews below ask the right questions.
ALLOWED = [
    ("create", "", "namespaces", "", None),
    ("delete", "", "namespaces", "", None),
    ("patch", "penguinmails.io", "tenants", "status", None),
    ("watch", "penguinmails.io", "campaigns", "", None),
    ("get", "", "secrets", "", "tenant-acme"),
    ("create", "rbac.authorization.k8s.io", "roles", "", "tenant-acme"),
    ("patch", "apps", "deployments", "", "tenant-acme"),
    ("watch", "", "pods", "", None),
    ("create", "scheduling.k8s.io", "priorityclasses", "", None),
    ("watch", "apiextensions.k8s.io", "customresourcedefinitions", "", None),
]


def _allowed(
    api: client.AuthorizationV1Api,
    verb: str,
    group: str,
    resource: str,
    subresource: str,
    namespace: str | None,
) -> bool:
    review = client.V1SelfSubjectAccessReview(
        spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(
                verb=verb,
                group=group,
                resource=resource,
                subresource=subresource or None,
                namespace=namespace,
            )
        )
    )
    status = api.create_self_subject_access_review(review).status
    assert status is not None
    return bool(status.allowed)


def test_chart_service_account_is_refused_what_it_must_never_do(
    chart_identity: ChartIdentity,
) -> None:
    with api_client_for(chart_identity.kubeconfig) as api:
        authorization = client.AuthorizationV1Api(api)
        identity = client.AuthenticationV1Api(api).create_self_subject_review(
            client.V1SelfSubjectReview()
        )
        assert identity.status is not None and identity.status.user_info is not None
        username = identity.status.user_info.username
        assert username == (
            f"system:serviceaccount:{chart_identity.namespace}:{chart_identity.service_account}"
        )
        granted = [check for check in FORBIDDEN if _allowed(authorization, *check)]
        refused = [check for check in ALLOWED if not _allowed(authorization, *check)]
    assert not granted, f"the operator's ServiceAccount may do what it must not: {granted}"
    assert not refused, f"the operator's ServiceAccount lacks what it needs: {refused}"


def test_admission_policy_keeps_the_operator_out_of_other_namespaces(
    chart_identity: ChartIdentity, core: client.CoreV1Api, api_client: client.ApiClient
) -> None:
    """Even with RBAC that would let it, the operator writes nothing outside tenant namespaces and
    its own: the chart's ValidatingAdmissionPolicy refuses it at the API server."""
    outsider = f"pm-outside-{suffix()}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=outsider)))
    documents = chart_identity.documents
    try:
        # Grant what the ClusterRole lets the operator grant itself anywhere (create rolebindings,
        # bind the secret-writer role), so that only the policy stands between it and the write.
        client.RbacAuthorizationV1Api(api_client).create_namespaced_role_binding(
            outsider,
            {
                "metadata": {"name": "operator-secret-writer"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": _secret_writer(documents),
                },
                "subjects": [
                    {
                        "kind": "ServiceAccount",
                        "name": chart_identity.service_account,
                        "namespace": chart_identity.namespace,
                    }
                ],
            },
        )
        secret = client.V1Secret(
            metadata=client.V1ObjectMeta(name="stolen"), string_data={"k": "v"}
        )
        with api_client_for(chart_identity.kubeconfig) as api:
            operator_core = client.CoreV1Api(api)
            # RBAC (once the binding propagates) allows it; a policy refusal comes after
            # authorization, so seeing one proves RBAC alone would have let the Secret through.
            message = wait_for(
                lambda: policy_refusal(
                    lambda: operator_core.create_namespaced_secret(outsider, secret)
                ),
                timeout=30,
                what=f"the operator's Secret in {outsider} refused by the policy",
            )
            assert f"only in tenant namespaces and {chart_identity.namespace}" in message
            assert outsider in message
            refusals = {
                "rolebinding in kube-system": lambda: _bind_secret_writer(
                    api, documents, "kube-system"
                ),
                "label a namespace as a tenant's": lambda: operator_core.patch_namespace(
                    outsider,
                    {"metadata": {"labels": {res.TENANT_LABEL: outsider}}},
                    dry_run="All",
                ),
                "deployment in kube-system": lambda: client.AppsV1Api(
                    api
                ).create_namespaced_deployment("kube-system", _deployment(), dry_run="All"),
                "create a namespace": lambda: operator_core.create_namespace(
                    client.V1Namespace(metadata=client.V1ObjectMeta(name=f"x-{outsider}")),
                    dry_run="All",
                ),
            }
            passed = [what for what, request in refusals.items() if not policy_refusal(request)]
            assert not passed, f"the policy let the operator: {passed}"
            # Its own namespace stays writable (its Lease lives there, pool relays too).
            assert not policy_refusal(
                lambda: _bind_secret_writer(api, documents, chart_identity.namespace)
            )
    finally:
        core.delete_namespace(outsider)


def test_sender_reads_only_the_secrets_its_campaigns_name(
    cluster: Cluster, api_client: client.ApiClient, core: client.CoreV1Api, private_dir: Path
) -> None:
    """The sender's ServiceAccount, with the objects the Tenant and Campaign controllers build,
    reads the Secrets its campaign's plan names and no other, here or in another tenant."""
    mine, theirs = (res.TenantRef(f"snd-{suffix()}", "", Tier.STARTER) for _ in range(2))

    def unowned(manifest: Document) -> Document:
        # No Tenant or Campaign exists here: an ownerReference to none would be collected.
        manifest["metadata"].pop("ownerReferences", None)
        return manifest

    try:
        for tenant in (mine, theirs):
            documents = [
                res.namespace(tenant),
                res.service_account(tenant),
                res.role(tenant),
                res.role_binding(tenant),
            ]
            apply_documents(api_client, [unowned(d) for d in documents])
            for secret in ("acme-dkim", "mx-relay", "penguinmails-sender", "hostwinds"):
                put_secret(core, tenant.namespace, secret, {"k": f"{secret}-value"})
        granted = ["acme-dkim", "mx-relay"]
        access = res.campaign_secret_access(mine.namespace, "hello", "0000-uid", granted)
        apply_documents(api_client, [unowned(d) for d in access])
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
        )
        issued = core.create_namespaced_service_account_token(
            res.SENDER_NAME, mine.namespace, request
        )
        assert issued.status is not None and issued.status.token
        kubeconfig = private_dir / f"{mine.name}.kubeconfig"
        write_kubeconfig(kubeconfig, cluster.server, str(issued.status.token), cluster.ca_file)

        def status_of(read: Callable[[], object]) -> int:
            try:
                read()
            except ApiException as error:
                return int(error.status)
            return 200

        with api_client_for(kubeconfig) as api:
            sender = client.CoreV1Api(api)

            def reads(name: str, namespace: str = mine.namespace) -> int:
                return status_of(lambda: sender.read_namespaced_secret(name, namespace))

            # A new RoleBinding takes effect when the authorizer's cache sees it.
            wait_for(lambda: reads("acme-dkim") == 200, timeout=30, what="the granted Secret")
            # Its own Secret too: its pod holds those values anyway (envFrom).
            allowed = [*granted, res.SENDER_NAME]
            assert {name: reads(name) for name in allowed} == dict.fromkeys(allowed, 200)
            refused = {
                "another tenant's sender Secret": reads(res.SENDER_NAME, theirs.namespace),
                "another Secret of its namespace": reads("hostwinds"),
                "a Secret of the same name in another tenant": reads("acme-dkim", theirs.namespace),
                "another tenant's relay": reads("mx-relay", theirs.namespace),
                "list its namespace": status_of(
                    lambda: sender.list_namespaced_secret(mine.namespace)
                ),
            }
            assert refused == dict.fromkeys(refused, 403)
    finally:
        for tenant in (mine, theirs):
            core.delete_namespace(tenant.namespace)
