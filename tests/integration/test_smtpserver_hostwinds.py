"""SmtpServers on Hostwinds, against the stand-in: provisioning, bad input, crashes, deletion."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.integration.conftest import GROUP, VERSION, OperatorFactory, OperatorProcess, wait_for
from tests.integration.smtpserver_helpers import (
    PLURAL,
    condition,
    delete_and_wait_gone,
    ensure_namespace,
    get,
    hostwinds_body,
    put_secret,
    ssh_private_key,
    wait_condition,
)
from tests.integration.test_tenant_operator import tenant_body, tenant_row, wait_ready
from tests.standins.hostwinds import HostwindsStandIn

pytestmark = pytest.mark.integration

NS = "smtp-hostwinds"
KEY = "hw-test-key"


@pytest.fixture(scope="module")
def standin() -> Iterator[HostwindsStandIn]:
    with HostwindsStandIn({KEY}, provision_seconds=1.0, timeout_delay=3.0) as server:
        yield server


@pytest.fixture(scope="module")
def namespace(core: client.CoreV1Api, crds_installed: list[str]) -> str:
    ensure_namespace(core, NS)
    put_secret(core, NS, "hostwinds", {"apiKey": KEY})
    put_secret(core, NS, "vps-ssh", {"id_ed25519": ssh_private_key()})
    return NS


def start_operator(
    factory: OperatorFactory, standin: HostwindsStandIn, **overrides: str
) -> OperatorProcess:
    env = {
        "PM_HOSTWINDS_URL": standin.url,
        "PM_HOSTWINDS_RPS": "50",
        "PM_HOSTWINDS_TIMEOUT_SECONDS": "2",
        "PM_HOSTWINDS_RETRY_BASE_SECONDS": "0.1",
        "PM_SMTP_POLL_SECONDS": "0.5",
        "PM_SMTP_PROBE_SECONDS": "0",
        "PM_MAILU_INSTALL": "false",
        **overrides,
    }
    return factory(**{k: v for k, v in env.items() if v})


@pytest.fixture(scope="module")
def operator(
    operator_process: OperatorFactory, standin: HostwindsStandIn, namespace: str
) -> Iterator[OperatorProcess]:
    handle = start_operator(operator_process, standin)
    yield handle
    handle.stop()


def create(api: client.CustomObjectsApi, body: dict[str, Any]) -> None:
    api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)


def srvrname(obj: dict[str, Any]) -> str:
    return f"pm-{obj['metadata']['uid'].replace('-', '')[:20]}"


def live_for(standin: HostwindsStandIn, obj: dict[str, Any]) -> list[Any]:
    return [i for i in standin.live() if i.srvrname == srvrname(obj)]


def orders_for(standin: HostwindsStandIn, obj: dict[str, Any]) -> int:
    with standin._lock:
        calls = list(standin.calls)
    return sum(
        1 for action, f in calls if action == "add_instance" and f.get("srvrname") == srvrname(obj)
    )


def test_provisions_one_vps_with_rdns_and_firewall_then_terminates_it(
    operator: OperatorProcess, custom_objects: client.CustomObjectsApi, standin: HostwindsStandIn
) -> None:
    create(custom_objects, hostwinds_body("mx-happy", "mx-happy.example.com"))
    obj = wait_condition(custom_objects, NS, "mx-happy", "Provisioned", "True")
    (instance,) = live_for(standin, obj)
    status = obj["status"]
    assert status["providerId"] == instance.serviceid
    assert status["provider"] == "hostwinds"
    assert status["ipAddress"] == instance.main_ip
    assert status["reverseDns"] == "mx-happy.example.com"
    assert instance.rdns == {instance.main_ip: "mx-happy.example.com"}
    assert instance.firewall == "penguinmails-smtp"
    assert instance.keys and instance.keys[0].startswith("ssh-ed25519 ")
    assert instance.password not in str(obj)

    delete_and_wait_gone(custom_objects, NS, "mx-happy")
    assert live_for(standin, obj) == []


def test_unknown_location_names_the_field_and_creates_nothing(
    operator: OperatorProcess, custom_objects: client.CustomObjectsApi, standin: HostwindsStandIn
) -> None:
    create(custom_objects, hostwinds_body("mx-badloc", "mx-badloc.example.com", locationId=99))
    obj = wait_condition(
        custom_objects, NS, "mx-badloc", "Provisioned", "False", reason="UnknownLocation"
    )
    assert "spec.provider.hostwinds.locationId" in condition(obj, "Provisioned")["message"]
    assert condition(obj, "Ready")["status"] == "False"
    wait_for(
        lambda: (
            (get(custom_objects, NS, "mx-badloc") or {}).get("status", {}).get("phase") == "Failed"
        ),
        timeout=30,
        what="phase Failed",
    )
    assert live_for(standin, obj) == []
    delete_and_wait_gone(custom_objects, NS, "mx-badloc")


def test_wrong_api_key_names_the_secret_to_fix(
    operator: OperatorProcess,
    custom_objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
    standin: HostwindsStandIn,
) -> None:
    put_secret(core, NS, "hw-wrong", {"apiKey": "not-the-key"})
    body = hostwinds_body(
        "mx-wrongkey",
        "mx-wrongkey.example.com",
        apiKeySecretRef={"name": "hw-wrong", "key": "apiKey"},
    )
    create(custom_objects, body)
    obj = wait_condition(
        custom_objects, NS, "mx-wrongkey", "Provisioned", "False", reason="InvalidAPIKey"
    )
    assert "apiKeySecretRef" in condition(obj, "Provisioned")["message"]
    assert "not-the-key" not in str(obj) and "not-the-key" not in operator.log()
    assert live_for(standin, obj) == []
    # Deleting waits: only a working key could terminate a VPS that might exist. The way out
    # without fixing the key is to keep whatever exists.
    custom_objects.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "mx-wrongkey")
    wait_for(
        lambda: "CleanupBlocked" in {e.reason for e in core.list_namespaced_event(NS).items},
        timeout=30,
        what="a CleanupBlocked event",
    )
    assert get(custom_objects, NS, "mx-wrongkey") is not None
    custom_objects.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        NS,
        PLURAL,
        "mx-wrongkey",
        {"spec": {"provider": {"hostwinds": {"reclaimPolicy": "Retain"}}}},
    )
    wait_for(lambda: get(custom_objects, NS, "mx-wrongkey") is None, timeout=60, what="deleted")


def test_missing_api_key_secret_names_the_field_then_recovers(
    operator: OperatorProcess,
    custom_objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
    standin: HostwindsStandIn,
) -> None:
    body = hostwinds_body(
        "mx-nokey", "mx-nokey.example.com", apiKeySecretRef={"name": "hw-later", "key": "apiKey"}
    )
    create(custom_objects, body)
    obj = wait_condition(
        custom_objects, NS, "mx-nokey", "Provisioned", "False", reason="SecretNotFound"
    )
    message = condition(obj, "Provisioned")["message"]
    assert "spec.provider.hostwinds.apiKeySecretRef" in message and "hw-later" in message
    assert KEY not in str(obj)
    put_secret(core, NS, "hw-later", {"apiKey": KEY})
    obj = wait_condition(custom_objects, NS, "mx-nokey", "Provisioned", "True", timeout=90)
    assert len(live_for(standin, obj)) == 1
    delete_and_wait_gone(custom_objects, NS, "mx-nokey")
    assert live_for(standin, obj) == []


def test_transient_api_failures_and_a_create_that_answers_an_error_make_one_vps(
    operator: OperatorProcess, custom_objects: client.CustomObjectsApi, standin: HostwindsStandIn
) -> None:
    standin.inject("get_instances", "5xx", times=2)
    standin.inject("add_instance", "done_but_error")
    create(custom_objects, hostwinds_body("mx-flaky", "mx-flaky.example.com"))
    obj = wait_condition(custom_objects, NS, "mx-flaky", "Provisioned", "True", timeout=90)
    assert len(live_for(standin, obj)) == 1
    delete_and_wait_gone(custom_objects, NS, "mx-flaky")
    assert live_for(standin, obj) == []


# -- SIGKILL at each step of provisioning ---------------------------------------------------------


def _kill_before_create(standin: HostwindsStandIn, wait: Callable[[], dict[str, Any]]) -> None:
    standin.hold("get_instances")  # the lookup that precedes the create


def _kill_after_create(standin: HostwindsStandIn, wait: Callable[[], dict[str, Any]]) -> None:
    standin.hold("add_instance", after=True)  # created; the answer (and status) never arrive


def _kill_during_rdns(standin: HostwindsStandIn, wait: Callable[[], dict[str, Any]]) -> None:
    standin.hold("set_rdns")


STEPS = {
    "before-create": ("get_instances", _kill_before_create),
    "after-create-before-status": ("add_instance", _kill_after_create),
    "during-rdns": ("set_rdns", _kill_during_rdns),
}


@pytest.mark.parametrize("step", [*STEPS, "during-polling"])
def test_sigkill_at_each_provisioning_step_leaves_exactly_one_vps(
    step: str,
    operator_process: OperatorFactory,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    standin: HostwindsStandIn,
    operator: OperatorProcess,
) -> None:
    operator.stop()  # the module's operator must not race the one killed here
    name = f"mx-kill-{step}"[:40].rstrip("-")
    first = start_operator(operator_process, standin)
    if step == "during-polling":
        standin.provision_seconds = 4.0
        create(custom_objects, hostwinds_body(name, f"{name}.example.com"))

        # The provider id is written first, then the condition moves on to Provisioning
        # (polling): wait for both, so the kill lands while the VPS is being polled.
        def polling() -> bool:
            obj = get(custom_objects, NS, name) or {}
            has_id = bool((obj.get("status") or {}).get("providerId"))
            return has_id and condition(obj, "Provisioned").get("reason") == "Provisioning"

        wait_for(polling, timeout=60, what="the provider id recorded while the VPS builds")
        first.kill()
    else:
        action, arm = STEPS[step]
        arm(standin, lambda: {})
        create(custom_objects, hostwinds_body(name, f"{name}.example.com"))
        assert standin.wait_held(action, timeout=60), f"operator never called {action}"
        first.kill()
        standin.release(action)
    obj = get(custom_objects, NS, name)
    assert obj is not None
    second = start_operator(operator_process, standin)
    try:
        obj = wait_condition(custom_objects, NS, name, "Provisioned", "True", timeout=90)
        assert len(live_for(standin, obj)) == 1, standin.live()
        assert obj["status"]["reverseDns"] == f"{name}.example.com"
        delete_and_wait_gone(custom_objects, NS, name)
        assert live_for(standin, obj) == []
    finally:
        standin.provision_seconds = 1.0
        second.stop()
    operator.start()


def test_order_listed_late_after_a_sigkill_is_not_ordered_again(
    operator_process: OperatorFactory,
    namespace: str,
    custom_objects: client.CustomObjectsApi,
    standin: HostwindsStandIn,
    operator: OperatorProcess,
) -> None:
    """add_instance answers before the server is listed; the operator dies right after the call
    and its successor finds nothing listed. It must wait for the listing, not order again.

    Production timers: the default poll (30 s) and settle window (30 min); the listing lags less
    than one poll, so the restarted operator's first pass (on resume) sees nothing listed and the
    timer's first tick sees the server.
    """
    operator.stop()
    name = "mx-lagging"
    first = start_operator(operator_process, standin, PM_SMTP_POLL_SECONDS="")
    standin.listing_lag_seconds = 8.0
    standin.hold("add_instance", after=True)
    try:
        create(custom_objects, hostwinds_body(name, f"{name}.example.com"))
        assert standin.wait_held("add_instance", timeout=60), "operator never ordered"
        first.kill()
        standin.release("add_instance")
        killed = get(custom_objects, NS, name)
        assert killed is not None
        assert len(standin.live(srvrname(killed))) == 1  # ordered once so far, not listed yet
        second = start_operator(operator_process, standin, PM_SMTP_POLL_SECONDS="")
        try:
            obj = wait_condition(custom_objects, NS, name, "Provisioned", "True", timeout=120)
            assert orders_for(standin, obj) == 1, standin.live()
            assert len(live_for(standin, obj)) == 1
            # The order had been recorded through the status subresource before the call, and
            # is cleared once the server is listed.
            request = killed["status"].get("createRequested") or {}
            assert request.get("name") == srvrname(obj) and request.get("requestedAt")
            assert "createRequested" not in obj["status"]
            delete_and_wait_gone(custom_objects, NS, name)
            assert live_for(standin, obj) == []
        finally:
            second.stop()
    finally:
        standin.listing_lag_seconds = 0.0
        standin.release("add_instance")
        operator.start()


# -- deletion with the namespace ------------------------------------------------------------------


def namespace_gone(core: client.CoreV1Api, name: str) -> bool:
    try:
        core.read_namespace(name)
    except ApiException as error:
        return bool(error.status == 404)
    return False


def provision_in(
    custom_objects: client.CustomObjectsApi, core: client.CoreV1Api, namespace: str, name: str
) -> dict[str, Any]:
    put_secret(core, namespace, "hostwinds", {"apiKey": KEY})
    put_secret(core, namespace, "vps-ssh", {"id_ed25519": ssh_private_key()})
    body = hostwinds_body(name, f"{name}.example.com")
    custom_objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    return wait_condition(custom_objects, namespace, name, "Provisioned", "True", timeout=90)


def create_tenant_with_vps(
    custom_objects: client.CustomObjectsApi, core: client.CoreV1Api, tenant: str
) -> dict[str, Any]:
    custom_objects.create_cluster_custom_object(GROUP, VERSION, "tenants", tenant_body(tenant))
    wait_ready(custom_objects, tenant)
    return provision_in(custom_objects, core, f"tenant-{tenant}", "mx")


def tenant_gone(custom_objects: client.CustomObjectsApi, tenant: str) -> bool:
    try:
        custom_objects.get_cluster_custom_object(GROUP, VERSION, "tenants", tenant)
    except ApiException as error:
        return bool(error.status == 404)
    return False


def secret_gone(core: client.CoreV1Api, namespace: str, name: str) -> bool:
    try:
        core.read_namespaced_secret(name, namespace)
    except ApiException as error:
        return bool(error.status == 404)
    return False


def delete_while_a_pass_is_in_flight(
    standin: HostwindsStandIn, core: client.CoreV1Api, namespace: str, delete: Callable[[], None]
) -> None:
    """Delete while the SmtpServer's periodic pass waits on Hostwinds (holding the object's
    lock), until namespace deletion has swept its Secrets: the cleanup then runs after the
    sweep, deterministically, as it does whenever the operator is busy, slow or restarting."""
    standin.hold("get_instance")
    try:
        assert standin.wait_held("get_instance", timeout=30), "no pass polled the VPS"
        delete()
        wait_for(
            lambda: secret_gone(core, namespace, "vps-ssh"),
            timeout=60,
            what=f"namespace deletion removing the Secrets of {namespace}",
        )
    finally:
        standin.release("get_instance")


def test_deleting_a_tenant_terminates_its_vps_removes_the_namespace_and_marks_its_rows(
    operator: OperatorProcess,
    custom_objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
    standin: HostwindsStandIn,
    postgres_dsn: str,
) -> None:
    tenant, namespace = "hwleaver", "tenant-hwleaver"
    obj = create_tenant_with_vps(custom_objects, core, tenant)
    assert len(live_for(standin, obj)) == 1

    def delete() -> None:
        custom_objects.delete_cluster_custom_object(GROUP, VERSION, "tenants", tenant)

    delete_while_a_pass_is_in_flight(standin, core, namespace, delete)
    wait_for(lambda: tenant_gone(custom_objects, tenant), timeout=60, what="Tenant gone")
    record = tenant_row(postgres_dsn, tenant)
    assert record is not None and record["deleted_at"] is not None
    wait_for(lambda: namespace_gone(core, namespace), timeout=120, what=f"{namespace} deleted")
    assert live_for(standin, obj) == [], "the VPS must be terminated, not left billing"
    assert orders_for(standin, obj) == 1, "nothing may be ordered while deleting"
    assert f"Secret {namespace}/hostwinds does not exist" not in operator.log()


def test_tenant_deleted_while_its_namespace_terminates_is_not_a_retry_loop(
    operator: OperatorProcess,
    custom_objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
    standin: HostwindsStandIn,
    postgres_dsn: str,
) -> None:
    """The namespace is deleted directly (kubectl delete namespace) and is still terminating,
    held by the SmtpServer terminating its VPS, when the Tenant is deleted: the Tenant's DELETE
    of the namespace answers 409, which is progress. The API-key Secret outlives the rest of the
    namespace until the VPS is gone."""
    tenant, namespace = "hwnsfirst", "tenant-hwnsfirst"
    obj = create_tenant_with_vps(custom_objects, core, tenant)
    standin.hold("terminate")
    try:
        delete_while_a_pass_is_in_flight(
            standin, core, namespace, lambda: core.delete_namespace(namespace)
        )
        assert standin.wait_held("terminate", timeout=90), "the VPS was never terminated"
        custom_objects.delete_cluster_custom_object(GROUP, VERSION, "tenants", tenant)
        wait_for(lambda: tenant_gone(custom_objects, tenant), timeout=60, what="Tenant gone")
        assert not namespace_gone(core, namespace), "still terminating: the VPS is held"
        record = tenant_row(postgres_dsn, tenant)
        assert record is not None and record["deleted_at"] is not None
    finally:
        standin.release("terminate")
    wait_for(lambda: namespace_gone(core, namespace), timeout=120, what=f"{namespace} deleted")
    assert live_for(standin, obj) == [], "the VPS must be terminated, not left billing"
    assert orders_for(standin, obj) == 1, "nothing may be ordered while deleting"
    assert f"Tenant {tenant} not cleaned up yet" not in operator.log()


def test_hostname_that_is_not_an_fqdn_is_refused_by_the_api_server(
    custom_objects: client.CustomObjectsApi, namespace: str
) -> None:
    with pytest.raises(ApiException) as raised:
        create(custom_objects, hostwinds_body("mx-badname", "mailserver"))
    assert raised.value.status == 422 and "spec.hostname" in str(raised.value.body)
