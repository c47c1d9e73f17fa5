"""Where a Tenant's senders run, on the real node, through the operator process under kopf.

Business and enterprise senders ask for the dedicated pool (nodeSelector and toleration of its
label and taint); shared tiers do not tolerate its taint. A sender the scheduler cannot place
makes its Tenant say so (SendersScheduled=False, Ready=False, in the scheduler's words), and
placing it makes the Tenant Ready again; both at once, by the pod watch: the resync here is ten
times production's, so a timer cannot be what made a test pass.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from penguinmails.api.v1alpha1.tiers import (
    DEDICATED_POOL_LABEL,
    DEDICATED_POOL_VALUE,
    TIERS,
    Tier,
)
from penguinmails.devstack.node import Node
from penguinmails.operator.campaign import ACTIVE_ANNOTATION
from penguinmails.operator.tenant_resources import SENDER_NAME, TENANT_LABEL
from tests.integration.conftest import GROUP, VERSION, OperatorFactory, OperatorProcess, wait_for
from tests.integration.test_operator_events import DIFFBASE_SUFFIXES, PRODUCTION_RESYNC_SECONDS

pytestmark = pytest.mark.integration

# How long the scheduler and kubelet may take on a loaded 2-core machine; not a timing claim.
POD_TIMEOUT = 180.0


@pytest.fixture(scope="module")
def operator(operator_process: OperatorFactory, node: Node) -> Iterator[OperatorProcess]:
    handle = operator_process(PM_RESYNC_SECONDS=str(PRODUCTION_RESYNC_SECONDS * 10))
    yield handle
    handle.stop()
    handle.assert_no_errors()


@pytest.fixture
def pool(node: Node, core: client.CoreV1Api) -> Iterator[Node]:
    """The node, back in the pool it was in before the test, whatever the test did to it."""
    labels = core.read_node(node.name).metadata.labels or {}
    was_dedicated = labels.get(DEDICATED_POOL_LABEL) == DEDICATED_POOL_VALUE
    yield node
    node.set_dedicated(was_dedicated)


def tenant(api: client.CustomObjectsApi, name: str) -> dict[str, Any]:
    return dict(api.get_cluster_custom_object(GROUP, VERSION, "tenants", name))


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item["type"] == type_:
            return dict(item)
    return {}


def sender_pods(core: client.CoreV1Api, namespace: str) -> list[client.V1Pod]:
    selector = f"app.kubernetes.io/name={SENDER_NAME}"
    return list(core.list_namespaced_pod(namespace, label_selector=selector).items)


def scheduled_condition(pod: client.V1Pod) -> client.V1PodCondition | None:
    return next((c for c in pod.status.conditions or [] if c.type == "PodScheduled"), None)


def tenant_events(core: client.CoreV1Api, name: str) -> dict[str, str]:
    events = core.list_event_for_all_namespaces(
        field_selector=f"involvedObject.kind=Tenant,involvedObject.name={name}"
    ).items
    return {str(e.reason): str(e.message) for e in events}


@pytest.fixture
def sending_tenant(
    request: pytest.FixtureRequest,
    operator: OperatorProcess,
    custom_objects: client.CustomObjectsApi,
) -> Iterator[str]:
    """A Tenant of the tier `request.param` with one campaign marked Sending, as
    test_operator_events does (the Campaign controller fails preflight here: no domain), so
    that the Tenant scales its sender to 1. Deleted afterwards."""
    tier: Tier = request.param
    name = f"sched-{tier.value[:3]}-{secrets.token_hex(3)}"
    namespace = f"tenant-{name}"
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Tenant",
        "metadata": {"name": name},
        "spec": {"tier": tier.value, "contactEmail": f"ops@{name}.example.com"},
    }
    custom_objects.create_cluster_custom_object(GROUP, VERSION, "tenants", body)
    try:
        idle = wait_for(
            lambda: (
                condition(tenant(custom_objects, name), "SendersScheduled").get("reason")
                == "NoSenders"
            ),
            what=f"Tenant {name} reconciled with no sender",
        )
        assert idle
        assert condition(tenant(custom_objects, name), "Ready")["status"] == "True"
        campaign = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Campaign",
            "metadata": {"name": "hello"},
            "spec": {
                "sendingDomainRef": {"name": "missing"},
                "from": {"address": "jane@example.test"},
                "subject": "Hello",
                "text": "Hi.",
                "audience": {"lists": ["leads"]},
            },
        }
        custom_objects.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "campaigns", campaign
        )

        def handled() -> bool:
            obj = custom_objects.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "campaigns", "hello"
            )
            annotations = obj["metadata"].get("annotations") or {}
            pending = (obj.get("status") or {}).get("phase") == "Pending"
            return pending and any(k.endswith(DIFFBASE_SUFFIXES) for k in annotations)

        wait_for(handled, what="the Campaign handled once")
        custom_objects.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, "campaigns", "hello", {"status": {"phase": "Sending"}}
        )
        custom_objects.patch_cluster_custom_object(
            GROUP, VERSION, "tenants", name, {"metadata": {"annotations": {ACTIVE_ANNOTATION: "1"}}}
        )
        yield name
    finally:
        custom_objects.delete_cluster_custom_object(GROUP, VERSION, "tenants", name)
        wait_for(
            lambda: all(
                t["metadata"]["name"] != name
                for t in custom_objects.list_cluster_custom_object(GROUP, VERSION, "tenants")[
                    "items"
                ]
            ),
            timeout=120,
            what=f"Tenant {name} deleted",
        )


@pytest.mark.parametrize("sending_tenant", [Tier.BUSINESS], indirect=True)
def test_a_business_sender_waits_for_the_dedicated_pool_and_its_tenant_says_so(
    sending_tenant: str,
    pool: Node,
    core: client.CoreV1Api,
    custom_objects: client.CustomObjectsApi,
) -> None:
    name, namespace = sending_tenant, f"tenant-{sending_tenant}"
    pool.set_dedicated(False)  # the only node is in the shared pool

    def unschedulable_pod() -> client.V1Pod | None:
        for pod in sender_pods(core, namespace):
            scheduled = scheduled_condition(pod)
            if scheduled is not None and scheduled.reason == "Unschedulable":
                return pod
        return None

    pod = wait_for(unschedulable_pod, timeout=POD_TIMEOUT, what="the sender pod unschedulable")
    # The operator asked for the dedicated pool: its label, and a toleration of its taint.
    business = TIERS[Tier.BUSINESS]
    assert pod.spec.node_selector == dict(business.node_selector)
    tolerations = [
        {"key": t.key, "operator": t.operator, "value": t.value, "effect": t.effect}
        for t in pod.spec.tolerations
        if t.key == DEDICATED_POOL_LABEL
    ]
    assert tolerations == [dict(t) for t in business.tolerations]
    assert pod.spec.node_name is None
    scheduler_says = " ".join(str(scheduled_condition(pod).message).split())  # type: ignore[union-attr]
    assert "node affinity/selector" in scheduler_says, scheduler_says

    def reports_unschedulable() -> dict[str, Any] | None:
        obj = tenant(custom_objects, name)
        return obj if condition(obj, "SendersScheduled").get("status") == "False" else None

    obj = wait_for(reports_unschedulable, timeout=POD_TIMEOUT, what="the Tenant to say so")
    scheduled, ready = condition(obj, "SendersScheduled"), condition(obj, "Ready")
    assert scheduled["reason"] == "Unschedulable"
    assert (ready["status"], ready["reason"]) == ("False", "SendersUnschedulable")
    assert ready["message"] == scheduled["message"]
    # The scheduler's own words (it may have retried since: compare what does not change), and
    # what to do about it.
    assert scheduled["message"].startswith("1 of 1 sender pods cannot be scheduled: ")
    assert scheduler_says.split(":")[0] in scheduled["message"]
    assert f"{DEDICATED_POOL_LABEL}={DEDICATED_POOL_VALUE}" in scheduled["message"]
    assert (
        f"tainted {DEDICATED_POOL_LABEL}={DEDICATED_POOL_VALUE}:NoSchedule"
        in (scheduled["message"])
    )
    assert obj["status"]["senderReplicas"] == 1
    # The event of Ready's transition (the framework's: once, on the transition) says the same.
    events = wait_for(
        lambda: tenant_events(core, name).get("SendersUnschedulable"), what="a warning event"
    )
    assert events == f"Ready=False: {scheduled['message']}"[:1024]

    # The node joins the dedicated pool: the pod is placed there and the Tenant is Ready again.
    pool.set_dedicated(True)
    placed = wait_for(
        lambda: next((p for p in sender_pods(core, namespace) if p.spec.node_name), None),
        timeout=POD_TIMEOUT,
        what="the sender pod placed on the dedicated node",
    )
    assert placed.spec.node_name == pool.name
    assert placed.metadata.labels[TENANT_LABEL] == name

    def ready_again() -> dict[str, Any] | None:
        obj = tenant(custom_objects, name)
        return obj if condition(obj, "Ready").get("status") == "True" else None

    obj = wait_for(ready_again, timeout=POD_TIMEOUT, what="the Tenant Ready again")
    assert condition(obj, "SendersScheduled")["reason"] == "Scheduled"
    # And SendersScheduled's transition back to True, a Normal event with its reason.
    wait_for(lambda: "Scheduled" in tenant_events(core, name), what="the Scheduled event")


@pytest.mark.parametrize("sending_tenant", [Tier.STARTER], indirect=True)
def test_a_shared_tier_sender_stays_off_the_dedicated_pool(
    sending_tenant: str,
    pool: Node,
    core: client.CoreV1Api,
    custom_objects: client.CustomObjectsApi,
) -> None:
    name, namespace = sending_tenant, f"tenant-{sending_tenant}"
    pool.set_dedicated(True)  # the only node is reserved for the dedicated tiers

    def reports_unschedulable() -> dict[str, Any] | None:
        obj = tenant(custom_objects, name)
        return obj if condition(obj, "SendersScheduled").get("status") == "False" else None

    obj = wait_for(reports_unschedulable, timeout=POD_TIMEOUT, what="the Tenant to say so")
    message = condition(obj, "Ready")["message"]
    assert condition(obj, "Ready")["reason"] == "SendersUnschedulable"
    # The scheduler says a taint is not tolerated; the Tenant says which one that must be.
    assert "untolerated taint" in message, message
    assert (
        f"starter senders run only outside the dedicated pool (they do not tolerate "
        f"{DEDICATED_POOL_LABEL}={DEDICATED_POOL_VALUE}:NoSchedule)"
    ) in message, message
    [pod] = sender_pods(core, namespace)
    assert pod.spec.node_name is None
    assert not pod.spec.node_selector

    pool.set_dedicated(False)
    placed = wait_for(
        lambda: next((p for p in sender_pods(core, namespace) if p.spec.node_name), None),
        timeout=POD_TIMEOUT,
        what="the sender pod placed once the node left the dedicated pool",
    )
    assert placed.spec.node_name == pool.name
    wait_for(
        lambda: condition(tenant(custom_objects, name), "Ready").get("status") == "True",
        timeout=POD_TIMEOUT,
        what="the Tenant Ready again",
    )
