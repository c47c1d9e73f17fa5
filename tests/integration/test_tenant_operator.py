"""The Tenant operator against the real API server, controller-manager and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.utils import parse_quantity

from penguinmails.api.v1alpha1.tiers import TIERS, Tier
from tests.integration.conftest import GROUP, VERSION, OperatorFactory, OperatorProcess, wait_for

pytestmark = pytest.mark.integration


def tenant_body(name: str, tier: str = "starter", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Tenant",
        "metadata": {"name": name},
        "spec": {"tier": tier, "contactEmail": f"ops@{name}.example.com", **spec},
    }


@pytest.fixture(scope="module")
def operator(operator_process: OperatorFactory) -> Iterator[OperatorProcess]:
    handle = operator_process()
    yield handle
    handle.stop()
    handle.assert_no_errors()


def get_tenant(api: client.CustomObjectsApi, name: str) -> dict[str, Any]:
    return dict(api.get_cluster_custom_object(GROUP, VERSION, "tenants", name))


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item["type"] == type_:
            return dict(item)
    return None


def wait_ready(api: client.CustomObjectsApi, name: str, timeout: float = 60) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        obj = get_tenant(api, name)
        ready = condition(obj, "Ready")
        generation = obj["metadata"]["generation"]
        status = obj.get("status") or {}
        if ready and ready["status"] == "True" and status.get("observedGeneration") == generation:
            return obj
        return None

    return dict(wait_for(ready, timeout=timeout, what=f"Tenant {name} Ready"))


def tenant_row(dsn: str, name: str) -> asyncpg.Record | None:
    async def fetch() -> asyncpg.Record | None:
        connection = await asyncpg.connect(dsn)
        try:
            return await connection.fetchrow("SELECT * FROM tenants WHERE name = $1", name)
        finally:
            await connection.close()

    return asyncio.run(fetch())


def rejection(api: client.CustomObjectsApi, body: dict[str, Any]) -> str:
    with pytest.raises(ApiException) as raised:
        api.create_cluster_custom_object(GROUP, VERSION, "tenants", body)
    assert raised.value.status == 422, raised.value.body
    return str(json.loads(raised.value.body)["message"])


def test_all_four_kinds_are_served(crds_installed: list[str]) -> None:
    assert sorted(crds_installed) == [
        "campaigns.penguinmails.io",
        "sendingdomains.penguinmails.io",
        "smtpservers.penguinmails.io",
        "tenants.penguinmails.io",
    ]


def test_invalid_tenants_are_rejected_naming_the_field(
    custom_objects: client.CustomObjectsApi,
) -> None:
    assert "spec.tier" in rejection(custom_objects, tenant_body("bad-tier", tier="platinum"))
    message = rejection(custom_objects, tenant_body("bad-email", contactEmail="not-an-email"))
    assert "spec.contactEmail" in message
    too_long = "x" * 60
    assert "metadata.name" in rejection(custom_objects, tenant_body(too_long))


def test_tenant_gets_its_namespace_and_everything_in_it(
    operator: OperatorProcess,
    custom_objects: client.CustomObjectsApi,
    api_client: client.ApiClient,
    postgres_dsn: str,
) -> None:
    custom_objects.create_cluster_custom_object(GROUP, VERSION, "tenants", tenant_body("acme"))
    obj = wait_ready(custom_objects, "acme")
    status = obj["status"]
    assert status["namespace"] == "tenant-acme"
    assert status["tier"] == "starter"
    assert status["senderReplicas"] == 0
    assert condition(obj, "Suspended")["status"] == "False"  # type: ignore[index]

    ns = "tenant-acme"
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    net, rbac = client.NetworkingV1Api(api_client), client.RbacAuthorizationV1Api(api_client)
    namespace = core.read_namespace(ns)
    assert namespace.metadata.labels["penguinmails.io/tenant"] == "acme"
    quota = core.read_namespaced_resource_quota("penguinmails-tier", ns)
    hard = quota.spec.hard
    assert parse_quantity(hard["count/campaigns.penguinmails.io"]) == TIERS[Tier.STARTER].campaigns
    assert core.read_namespaced_limit_range("penguinmails-tier", ns).spec.limits
    assert net.read_namespaced_network_policy("default-deny-ingress", ns).spec.policy_types == [
        "Ingress"
    ]
    assert core.read_namespaced_service_account("penguinmails-sender", ns)
    assert rbac.read_namespaced_role("penguinmails-sender", ns).rules
    assert rbac.read_namespaced_role_binding("penguinmails-sender", ns).role_ref.name == (
        "penguinmails-sender"
    )
    deployment = apps.read_namespaced_deployment("penguinmails-sender", ns)
    assert deployment.spec.replicas == 0
    container = deployment.spec.template.spec.containers[0]
    assert container.resources.limits["cpu"] == TIERS[Tier.STARTER].sender_cpu_limit

    record = tenant_row(postgres_dsn, "acme")
    assert record is not None
    assert (record["tier"], record["namespace"], record["deleted_at"]) == (
        "starter",
        "tenant-acme",
        None,
    )


def test_scaling_the_sender_makes_the_controller_manager_create_its_replicaset(
    operator: OperatorProcess, custom_objects: client.CustomObjectsApi, api_client: client.ApiClient
) -> None:
    custom_objects.create_cluster_custom_object(GROUP, VERSION, "tenants", tenant_body("scaler"))
    wait_ready(custom_objects, "scaler")
    apps = client.AppsV1Api(api_client)
    apps.patch_namespaced_deployment_scale(
        "penguinmails-sender", "tenant-scaler", {"spec": {"replicas": 1}}
    )

    def replica_set() -> client.V1ReplicaSet | None:
        sets = apps.list_namespaced_replica_set("tenant-scaler").items
        return sets[0] if sets else None

    created = wait_for(replica_set, timeout=30, what="ReplicaSet of the sender")
    (owner,) = created.metadata.owner_references
    assert (owner.kind, owner.name) == ("Deployment", "penguinmails-sender")


def test_tier_change_resizes_everything(
    operator: OperatorProcess, custom_objects: client.CustomObjectsApi, api_client: client.ApiClient
) -> None:
    custom_objects.create_cluster_custom_object(GROUP, VERSION, "tenants", tenant_body("grower"))
    wait_ready(custom_objects, "grower")
    custom_objects.patch_cluster_custom_object(
        GROUP, VERSION, "tenants", "grower", {"spec": {"tier": "enterprise"}}
    )
    obj = wait_ready(custom_objects, "grower")
    assert obj["status"]["tier"] == "enterprise"
    enterprise = TIERS[Tier.ENTERPRISE]
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    quota = core.read_namespaced_resource_quota("penguinmails-tier", "tenant-grower")
    # The API server normalizes quantities (1000 -> 1k): compare values, not strings.
    campaigns = parse_quantity(quota.spec.hard["count/campaigns.penguinmails.io"])
    assert campaigns == enterprise.campaigns
    pod = apps.read_namespaced_deployment("penguinmails-sender", "tenant-grower").spec.template.spec
    assert pod.containers[0].resources.limits["memory"] == enterprise.sender_memory_limit
    assert pod.priority_class_name == enterprise.priority_class
    assert (pod.node_selector or {}) == dict(enterprise.node_selector)

    events = core.list_event_for_all_namespaces(field_selector="involvedObject.name=grower").items
    assert "TierChanged" in {event.reason for event in events}


def test_suspended_tenant_is_scaled_to_zero_with_a_reason(
    operator: OperatorProcess, custom_objects: client.CustomObjectsApi, api_client: client.ApiClient
) -> None:
    custom_objects.create_cluster_custom_object(GROUP, VERSION, "tenants", tenant_body("sleepy"))
    wait_ready(custom_objects, "sleepy")
    apps = client.AppsV1Api(api_client)
    apps.patch_namespaced_deployment_scale(
        "penguinmails-sender", "tenant-sleepy", {"spec": {"replicas": 2}}
    )
    custom_objects.patch_cluster_custom_object(
        GROUP,
        VERSION,
        "tenants",
        "sleepy",
        {"spec": {"suspended": True, "suspendReason": "invoice 42 unpaid"}},
    )
    obj = wait_ready(custom_objects, "sleepy")
    suspended = condition(obj, "Suspended")
    assert suspended is not None
    assert suspended["status"] == "True"
    assert "invoice 42 unpaid" in suspended["message"]
    wait_for(
        lambda: (
            apps.read_namespaced_deployment("penguinmails-sender", "tenant-sleepy").spec.replicas
            == 0
        ),
        what="sender scaled to 0",
    )


def test_drift_is_repaired(
    operator: OperatorProcess, custom_objects: client.CustomObjectsApi, api_client: client.ApiClient
) -> None:
    custom_objects.create_cluster_custom_object(GROUP, VERSION, "tenants", tenant_body("drifty"))
    wait_ready(custom_objects, "drifty")
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    core.delete_namespaced_resource_quota("penguinmails-tier", "tenant-drifty")
    apps.delete_namespaced_deployment("penguinmails-sender", "tenant-drifty")

    def restored() -> bool:
        try:
            core.read_namespaced_resource_quota("penguinmails-tier", "tenant-drifty")
            apps.read_namespaced_deployment("penguinmails-sender", "tenant-drifty")
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    wait_for(restored, timeout=30, what="quota and sender restored by the resync timer")


def test_idle_reconcile_writes_nothing(
    operator: OperatorProcess, custom_objects: client.CustomObjectsApi
) -> None:
    custom_objects.create_cluster_custom_object(GROUP, VERSION, "tenants", tenant_body("quiet"))
    before = wait_ready(custom_objects, "quiet")
    # Several resync periods (3 s each) pass; status must not be rewritten.
    time.sleep(8)
    after = get_tenant(custom_objects, "quiet")
    assert after["status"] == before["status"]


def test_deleting_a_tenant_removes_its_namespace_and_keeps_its_rows(
    operator: OperatorProcess,
    custom_objects: client.CustomObjectsApi,
    api_client: client.ApiClient,
    postgres_dsn: str,
) -> None:
    custom_objects.create_cluster_custom_object(GROUP, VERSION, "tenants", tenant_body("leaver"))
    wait_ready(custom_objects, "leaver")
    custom_objects.delete_cluster_custom_object(GROUP, VERSION, "tenants", "leaver")
    core = client.CoreV1Api(api_client)

    def namespace_gone() -> bool:
        try:
            core.read_namespace("tenant-leaver")
        except ApiException as error:
            return bool(error.status == 404)
        return False

    wait_for(namespace_gone, timeout=90, what="namespace tenant-leaver deleted")

    def tenant_gone() -> bool:
        try:
            get_tenant(custom_objects, "leaver")
        except ApiException as error:
            return bool(error.status == 404)
        return False

    wait_for(tenant_gone, timeout=30, what="Tenant leaver gone (finalizer released)")

    record = tenant_row(postgres_dsn, "leaver")
    assert record is not None, "the tenant's row must be kept, marked deleted"
    assert record["deleted_at"] is not None
    assert record["purge_after"] > record["deleted_at"]
