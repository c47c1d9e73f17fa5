"""In-cluster MailU in namespaces labelled like tenants' (Pod Security level, the tier's LimitRange
and ResourceQuota), on the real API server with its admission plugins and controller-manager.

MailU's images cannot be pulled here (no registry on this machine), so the pods never start: what
is proven is admission (PodSecurity, LimitRanger, ResourceQuota) of every pod the ReplicaSets
create, the volumes' access modes, and the operator's refusal where the namespace cannot run it.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.utils import parse_quantity

from penguinmails.api.v1alpha1.smtpserver import MailuInClusterProvider, SmtpServerSpec
from penguinmails.api.v1alpha1.tiers import TIERS, Tier
from penguinmails.operator import tenant_resources as res
from penguinmails.operator.mailu.fit import MailuRefusedError, check, mailu_usage
from penguinmails.operator.mailu.manifests import Owner, manifests
from penguinmails.operator.mailu.render import MailuSecrets
from tests.integration.conftest import GROUP, VERSION, OperatorFactory, wait_for
from tests.integration.smtpserver_helpers import PLURAL, condition, wait_condition

pytestmark = pytest.mark.integration

NAME = "mx"
MAILU = {"replicas": 2, "storageSize": "1Gi", "serviceType": "ClusterIP"}


def tenant_namespace(core: client.CoreV1Api, tier: Tier) -> str:
    """A namespace with a tenant namespace's Pod Security labels, tier label, LimitRange and
    ResourceQuota (tenant_resources.py), without a Tenant: no owner, no tenant label."""
    name = f"mailu-{tier.value}-{uuid.uuid4().hex[:6]}"
    ref = res.TenantRef(name, "none", tier)
    labels = {
        key: value
        for key, value in res.namespace(ref)["metadata"]["labels"].items()
        if key.startswith("pod-security.kubernetes.io/") or key == res.TIER_LABEL
    }
    core.create_namespace({"metadata": {"name": name, "labels": labels}})
    quota, limits = copy.deepcopy(res.resource_quota(ref)), copy.deepcopy(res.limit_range(ref))
    for manifest in (quota, limits):
        manifest["metadata"] = {"name": manifest["metadata"]["name"], "namespace": name}
    # The object counts of the custom kinds concern no pod, and this control plane's quota
    # controller counts kinds installed after it started only at its next full resync
    # (minutes): until then it refuses every SmtpServer ("status unknown for quota").
    hard = quota["spec"]["hard"]
    quota["spec"]["hard"] = {k: v for k, v in hard.items() if not k.startswith("count/")}
    core.create_namespaced_resource_quota(name, quota)
    core.create_namespaced_limit_range(name, limits)

    # Admission refuses what the quota counts until the quota controller has set its status,
    # and pods until the default ServiceAccount exists.
    missing: list[str] = []

    def counted() -> bool:
        status = core.read_namespaced_resource_quota(quota["metadata"]["name"], name).status
        missing[:] = sorted(set(status.hard or {"hard": ""}) - set(status.used or {}))
        return not missing

    try:
        wait_for(counted, timeout=120, what=f"the ResourceQuota in {name} counted")
    except AssertionError as error:
        raise AssertionError(f"{error}; not counted: {missing}") from None
    wait_for(
        lambda: core.list_namespaced_service_account(name).items,
        what=f"the default ServiceAccount of {name}",
    )
    return name


@pytest.fixture
def namespaces(core: client.CoreV1Api, crds_installed: list[str]) -> Iterator[dict[Tier, str]]:
    made: dict[Tier, str] = {}

    class Lazy(dict[Tier, str]):
        def __missing__(self, tier: Tier) -> str:
            made[tier] = self[tier] = tenant_namespace(core, tier)
            return made[tier]

    yield Lazy()
    for name in made.values():
        core.delete_namespace(name)


def rendered_pods(namespace: str) -> dict[str, dict[str, Any]]:
    spec = SmtpServerSpec.model_validate(
        {"hostname": "mx.tier.example.com", "provider": {"mailuInCluster": MAILU}}
    )
    objects = manifests(Owner(NAME, namespace, "uid"), spec, MailuSecrets("k" * 32, "t" * 40))
    return {
        m["metadata"]["name"]: {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": m["metadata"]["name"]},
            "spec": m["spec"]["template"]["spec"],
        }
        for m in objects
        if m["kind"] == "Deployment"
    }


def admission_refusal(core: client.CoreV1Api, namespace: str, pod: dict[str, Any]) -> str:
    """What the API server says to creating the pod (dry run: nothing is stored); "" if admitted."""
    try:
        core.create_namespaced_pod(namespace, pod, dry_run="All")
    except ApiException as error:
        assert error.status == 403, error.body
        return str(error.body)
    return ""


@pytest.mark.parametrize("tier", list(Tier))
def test_the_api_server_admits_mailus_pods_exactly_where_the_operator_would_run_them(
    core: client.CoreV1Api, namespaces: dict[Tier, str], tier: Tier
) -> None:
    namespace = namespaces[tier]
    labels = core.read_namespace(namespace).metadata.labels
    try:
        check(namespace, labels, MailuInClusterProvider.model_validate(MAILU))
        runs = True
    except MailuRefusedError as refused:
        assert refused.reason == "PodSecurityRestricted"
        runs = False
    assert runs == (TIERS[tier].pod_security == "baseline")
    refusals = {
        name: admission_refusal(core, namespace, pod)
        for name, pod in rendered_pods(namespace).items()
    }
    if runs:
        assert refusals == dict.fromkeys(refusals, "")
    else:
        # Redis alone meets restricted; MailU's own images are refused, as fit.py says (those
        # above the small tiers' per-container max by the LimitRange, checked first).
        assert refusals.pop(f"{NAME}-mailu-redis") == ""
        pod_security = 'violates PodSecurity \\"restricted:latest\\"'
        for name, refusal in refusals.items():
            assert pod_security in refusal or "per Container" in refusal, (name, refusal)
        assert sum(pod_security in refusal for refusal in refusals.values()) >= 3


def smtpserver(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SmtpServer",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {"hostname": "mx.tier.example.com", "provider": {"mailuInCluster": MAILU}},
    }


def mailu_pods(core: client.CoreV1Api, namespace: str) -> list[client.V1Pod]:
    selector = "app.kubernetes.io/name=mailu"
    return list(core.list_namespaced_pod(namespace, label_selector=selector).items)


def test_business_tenant_namespace_admits_every_pod_of_the_operators_mailu(
    operator_process: OperatorFactory,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    custom_objects: client.CustomObjectsApi,
    namespaces: dict[Tier, str],
) -> None:
    namespace = namespaces[Tier.BUSINESS]
    operator = operator_process(PM_SMTP_POLL_SECONDS="0.5", PM_SMTP_PROBE_SECONDS="0")
    try:
        custom_objects.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, smtpserver(namespace)
        )
        wait_condition(custom_objects, namespace, NAME, "Provisioned", "True", timeout=120)
        deployments = apps.list_namespaced_deployment(namespace).items
        assert len(deployments) == 6
        wanted = sum(d.spec.replicas for d in deployments)
        assert wanted == 7  # two fronts, one of each other component
        wait_for(
            lambda: len(mailu_pods(core, namespace)) == wanted or None,
            timeout=120,
            what="every MailU pod created by its ReplicaSet",
        )
        failed = [
            f"{e.involved_object.name}: {e.message}"
            for e in core.list_namespaced_event(namespace).items
            if e.reason == "FailedCreate"
        ]
        assert failed == []
        for pod in mailu_pods(core, namespace):
            # Placed like the tier's senders: on the dedicated pool.
            assert pod.spec.node_selector == dict(TIERS[Tier.BUSINESS].node_selector)

        # The quota counted exactly what fit.py reckons one MailU takes.
        expected = mailu_usage(MailuInClusterProvider.model_validate(MAILU))
        quota = core.read_namespaced_resource_quota("penguinmails-tier", namespace)
        used = {k: Decimal(parse_quantity(v)) for k, v in (quota.status.used or {}).items()}
        assert used["pods"] == expected.pods == wanted
        assert used["limits.cpu"] == expected.limits_cpu
        assert used["limits.memory"] == expected.limits_memory
        assert used["requests.cpu"] == expected.requests_cpu
        assert used["requests.memory"] == expected.requests_memory

        # One claim per stateful component, each ReadWriteOnce claim in one single pod.
        claims = {
            c.metadata.name: c.spec.access_modes
            for c in core.list_namespaced_persistent_volume_claim(namespace).items
        }
        users: dict[str, int] = {}
        for pod in mailu_pods(core, namespace):
            for volume in pod.spec.volumes or []:
                if volume.persistent_volume_claim is not None:
                    claim = volume.persistent_volume_claim.claim_name
                    users[claim] = users.get(claim, 0) + 1
        assert set(users) == set(claims)
        assert claims.pop(f"{NAME}-mailu-front-shared") == ["ReadWriteMany"]
        assert all(modes == ["ReadWriteOnce"] and users[c] == 1 for c, modes in claims.items())
        # The images are not on this machine: the pods are admitted but never start here.
        assert {p.status.phase for p in mailu_pods(core, namespace)} == {"Pending"}
    finally:
        operator.stop()


def test_starter_tenant_namespace_refuses_mailu_with_a_condition_and_applies_nothing(
    operator_process: OperatorFactory,
    apps: client.AppsV1Api,
    custom_objects: client.CustomObjectsApi,
    namespaces: dict[Tier, str],
) -> None:
    namespace = namespaces[Tier.STARTER]
    operator = operator_process(PM_SMTP_POLL_SECONDS="0.5", PM_SMTP_PROBE_SECONDS="0")
    try:
        custom_objects.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, smtpserver(namespace)
        )
        obj = wait_condition(
            custom_objects, namespace, NAME, "Provisioned", "False", reason="PodSecurityRestricted"
        )
        message = condition(obj, "Provisioned")["message"]
        assert f"namespace {namespace} (tier starter)" in message
        assert "provider.relay" in message and "business, enterprise" in message
        assert obj["status"]["phase"] == "Failed"
        assert apps.list_namespaced_deployment(namespace).items == []
    finally:
        operator.stop()
