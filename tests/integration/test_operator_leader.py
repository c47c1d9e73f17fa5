"""Two operator replicas elect one leader on a Lease; SIGKILL of the leader hands over.

Both replicas are the real operator process with the chart's leader-election settings at their
defaults (PM_LEADER_LEASE set, durations unset).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from datetime import datetime

import pytest
from kubernetes import client

from penguinmails.devstack.stack import OPERATOR_COMMAND
from penguinmails.operator.leader import LeaseSettings
from tests.integration.conftest import (
    GROUP,
    VERSION,
    OperatorFactory,
    OperatorProcess,
    wait_for,
)

pytestmark = pytest.mark.integration

HANDLED = "Handler 'tenants-changed' succeeded"
LEADING = "became leader"


@pytest.fixture(scope="module")
def lease_namespace(core: client.CoreV1Api) -> Iterator[str]:
    name = f"pm-system-{secrets.token_hex(3)}"
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def tenant(name: str) -> dict[str, object]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Tenant",
        "metadata": {"name": name},
        "spec": {"tier": "starter", "contactEmail": f"ops@{name}.example.com"},
    }


def ready(api: client.CustomObjectsApi, name: str) -> bool:
    obj = api.get_cluster_custom_object(GROUP, VERSION, "tenants", name)
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_one_leader_reconciles_and_a_standby_takes_over_after_sigkill(
    operator_process: OperatorFactory,
    custom_objects: client.CustomObjectsApi,
    api_client: client.ApiClient,
    lease_namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    coordination = client.CoordinationV1Api(api_client)
    lease_name = "penguinmails-operator"
    env = {"PM_LEADER_LEASE": f"{lease_namespace}/{lease_name}"}
    first = operator_process(**env, PM_LEADER_IDENTITY="replica-a")
    # The factory runs one operator at a time; the second replica is started beside it here.
    second = OperatorProcess(
        list(OPERATOR_COMMAND),
        {**first.env, "PM_LEADER_IDENTITY": "replica-b"},
        tmp_path_factory.mktemp("replica-b") / "operator.log",
    ).start()
    names = [f"lead-{secrets.token_hex(3)}", f"lead-{secrets.token_hex(3)}"]
    try:
        defaults = LeaseSettings.from_env(env)
        assert defaults is not None

        def holder() -> str:
            try:
                lease = coordination.read_namespaced_lease(lease_name, lease_namespace)
            except client.ApiException as error:
                if error.status == 404:
                    return ""  # not created yet
                raise
            return str(lease.spec.holder_identity or "")

        wait_for(lambda: holder() == "replica-a", timeout=60, what="replica-a leading")
        wait_for(
            lambda: "waiting for leadership" in second.log(), timeout=60, what="replica-b waiting"
        )

        # While replica-a leads, it alone reconciles.
        custom_objects.create_cluster_custom_object(GROUP, VERSION, "tenants", tenant(names[0]))
        wait_for(lambda: ready(custom_objects, names[0]), timeout=60, what="first Tenant Ready")
        assert HANDLED in first.log()
        assert HANDLED not in second.log() and LEADING not in second.log()

        first.kill()  # SIGKILL: no release, the Lease must expire
        last_renewal: datetime = coordination.read_namespaced_lease(
            lease_name, lease_namespace
        ).spec.renew_time
        # Takeover comes at most one lease duration after the last renewal, plus the standby's
        # look interval (twice: one to notice, one for the write's own round trip).
        bound = defaults.duration_seconds + 2 * defaults.retry_seconds
        wait_for(lambda: holder() == "replica-b", timeout=bound * 4, what="replica-b leading")
        lease = coordination.read_namespaced_lease(lease_name, lease_namespace)
        took = (lease.spec.acquire_time - last_renewal).total_seconds()
        assert 0 < took <= bound, (took, bound)
        assert lease.spec.lease_transitions == 1

        # replica-b reconciles now, and reconciled nothing before it led.
        custom_objects.create_cluster_custom_object(GROUP, VERSION, "tenants", tenant(names[1]))
        wait_for(lambda: ready(custom_objects, names[1]), timeout=60, what="second Tenant Ready")
        log = second.log()
        assert LEADING in log and HANDLED in log
        assert log.index(LEADING) < log.index(HANDLED)
        second.assert_no_errors()
    finally:
        for name in names:
            with contextlib.suppress(client.ApiException):
                custom_objects.delete_cluster_custom_object(GROUP, VERSION, "tenants", name)
        wait_for(
            lambda: (
                not {
                    t["metadata"]["name"]
                    for t in custom_objects.list_cluster_custom_object(GROUP, VERSION, "tenants")[
                        "items"
                    ]
                }
                & set(names)
            ),
            timeout=60,
            what="Tenants deleted",
        )
        second.stop()
        first.stop()
