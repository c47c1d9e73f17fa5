"""Two operator replicas elect one leader on a Lease; SIGKILL of the leader hands over.

Both replicas are the real operator process with the chart's leader-election settings at their
defaults (PM_LEADER_LEASE set, durations unset). The leader is killed while it provisions a
Hostwinds VPS (the stand-in): the new leader finishes it, and exactly one VPS exists.
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
from tests.integration.smtpserver_helpers import (
    PLURAL,
    condition,
    delete_and_wait_gone,
    get,
    hostwinds_body,
    put_secret,
    ssh_private_key,
    wait_condition,
)
from tests.standins.hostwinds import HostwindsStandIn

pytestmark = pytest.mark.integration

HANDLED = "Handler 'tenants-changed' succeeded"
LEADING = "became leader"
ANY_HANDLER = "Handler '"
KEY = "hw-leader-key"


@pytest.fixture(scope="module")
def lease_namespace(core: client.CoreV1Api) -> Iterator[str]:
    """The release namespace: the Lease, and an SmtpServer with its Secrets."""
    name = f"pm-system-{secrets.token_hex(3)}"
    core.create_namespace({"metadata": {"name": name}})
    put_secret(core, name, "hostwinds", {"apiKey": KEY})
    put_secret(core, name, "vps-ssh", {"id_ed25519": ssh_private_key()})
    yield name
    core.delete_namespace(name)


@pytest.fixture(scope="module")
def standin() -> Iterator[HostwindsStandIn]:
    # A VPS takes a while to build, so the leader is killed while it polls for it.
    with HostwindsStandIn({KEY}, provision_seconds=8.0) as server:
        yield server


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
    standin: HostwindsStandIn,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    coordination = client.CoordinationV1Api(api_client)
    lease_name = "penguinmails-operator"
    env = {
        "PM_LEADER_LEASE": f"{lease_namespace}/{lease_name}",
        "PM_HOSTWINDS_URL": standin.url,
        "PM_HOSTWINDS_RPS": "50",
        "PM_SMTP_POLL_SECONDS": "0.5",
        "PM_SMTP_PROBE_SECONDS": "0",
        "PM_MAILU_INSTALL": "false",
    }
    first = operator_process(**env, PM_LEADER_IDENTITY="replica-a")
    second: OperatorProcess | None = None
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
        # The factory runs one operator at a time; the second replica is started beside it.
        second = OperatorProcess(
            list(OPERATOR_COMMAND),
            {**first.env, "PM_LEADER_IDENTITY": "replica-b"},
            tmp_path_factory.mktemp("replica-b") / "operator.log",
        ).start()
        wait_for(
            lambda: "waiting for leadership" in second.log(), timeout=60, what="replica-b waiting"
        )

        # While replica-a leads, it alone reconciles.
        custom_objects.create_cluster_custom_object(GROUP, VERSION, "tenants", tenant(names[0]))
        wait_for(lambda: ready(custom_objects, names[0]), timeout=60, what="first Tenant Ready")
        assert HANDLED in first.log()
        assert HANDLED not in second.log() and LEADING not in second.log()

        # The leader orders a VPS and records its id; killed while the VPS builds.
        server = "mx-leader"
        custom_objects.create_namespaced_custom_object(
            GROUP,
            VERSION,
            lease_namespace,
            PLURAL,
            hostwinds_body(server, f"{server}.example.com"),
        )

        def polling() -> bool:
            obj = get(custom_objects, lease_namespace, server) or {}
            has_id = bool((obj.get("status") or {}).get("providerId"))
            return has_id and condition(obj, "Provisioned").get("reason") == "Provisioning"

        wait_for(polling, timeout=60, what="the VPS ordered and building")
        assert ANY_HANDLER not in second.log()  # the standby has handled nothing at all
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

        # The new leader finishes the VPS the old one ordered: one VPS, never two.
        obj = wait_condition(
            custom_objects, lease_namespace, server, "Provisioned", "True", timeout=90
        )
        srvrname = f"pm-{obj['metadata']['uid'].replace('-', '')[:20]}"
        assert [i.srvrname for i in standin.live()].count(srvrname) == 1, standin.live()
        delete_and_wait_gone(custom_objects, lease_namespace, server)
        assert srvrname not in [i.srvrname for i in standin.live()]

        # replica-b reconciles now, and reconciled nothing before it led.
        custom_objects.create_cluster_custom_object(GROUP, VERSION, "tenants", tenant(names[1]))
        wait_for(lambda: ready(custom_objects, names[1]), timeout=60, what="second Tenant Ready")
        log = second.log()
        assert LEADING in log and HANDLED in log
        assert log.index(LEADING) < log.index(ANY_HANDLER)
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
        if second is not None:
            second.stop()
        first.stop()
