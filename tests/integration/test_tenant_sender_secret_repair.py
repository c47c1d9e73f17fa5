"""A deleted sender Secret is issued again and a new sender pod starts with it, on the real node,
through the operator process: the resync reads nothing (docs/scaling.md), so an event told, the
Secret's own watch (test_tenant_sender_secret_watch.py) or, when the new pod is faster, the pod
that cannot start without it (CreateContainerConfigError). The resync here is ten times
production's, so a timer cannot be what made the test pass."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from penguinmails.api.v1alpha1.tiers import Tier
from penguinmails.devstack.node import Node
from penguinmails.operator.tenant_resources import SENDER_NAME
from tests.integration.conftest import OperatorFactory, OperatorProcess, wait_for
from tests.integration.sender_support import platform_sender_secret
from tests.integration.test_operator_events import PRODUCTION_RESYNC_SECONDS
from tests.integration.test_tenant_scheduling import (
    POD_TIMEOUT,
    pool,
    sender_pods,
    sending_tenant,
)

pytestmark = pytest.mark.integration

__all__ = ["pool", "sending_tenant"]  # fixtures, reused

PLATFORM = "penguinmails-platform"
PLATFORM_SECRET = "pm-sender-repair"


@pytest.fixture(scope="module")
def operator(
    operator_process: OperatorFactory,
    node: Node,
    core: client.CoreV1Api,
    postgres_dsn: str,
    redis_url: str,
) -> Iterator[OperatorProcess]:
    reference = platform_sender_secret(
        core,
        PLATFORM,
        PLATFORM_SECRET,
        database_url=postgres_dsn,
        redis_url=redis_url,
        suppression_key="repair-suppression-key",
    )
    handle = operator_process(
        PM_RESYNC_SECONDS=str(PRODUCTION_RESYNC_SECONDS * 10),
        PM_SENDER_SECRET=reference,
    )
    yield handle
    handle.stop()
    handle.assert_no_errors()
    core.delete_namespaced_secret(PLATFORM_SECRET, PLATFORM)


def started(pod: client.V1Pod) -> bool:
    """The kubelet built the container's environment and started it at least once (it may have
    exited since: the databases on loopback are out of the pod's reach)."""
    for status in pod.status.container_statuses or []:
        state, last = status.state, status.last_state
        if state.running or state.terminated or (last and last.terminated):
            return True
    return False


def config_error(pod: client.V1Pod) -> bool:
    return any(
        s.state.waiting and s.state.waiting.reason == "CreateContainerConfigError"
        for s in pod.status.container_statuses or []
    )


def secret_uid(core: client.CoreV1Api, namespace: str) -> str | None:
    try:
        return str(core.read_namespaced_secret(SENDER_NAME, namespace).metadata.uid)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


@pytest.mark.parametrize("sending_tenant", [Tier.STARTER], indirect=True)
def test_a_sender_pod_missing_its_secret_has_it_issued_again(
    operator: OperatorProcess, sending_tenant: str, pool: Node, core: client.CoreV1Api
) -> None:
    namespace = f"tenant-{sending_tenant}"
    pool.set_dedicated(False)
    wait_for(
        lambda: any(started(p) for p in sender_pods(core, namespace)),
        timeout=POD_TIMEOUT,
        what="the sender pod started with its Secret",
    )
    before = secret_uid(core, namespace)
    assert before is not None
    core.delete_namespaced_secret(SENDER_NAME, namespace)
    for pod in sender_pods(core, namespace):
        core.delete_namespaced_pod(pod.metadata.name, namespace, grace_period_seconds=0)

    after = wait_for(
        lambda: (uid := secret_uid(core, namespace)) and uid != before and uid,
        timeout=POD_TIMEOUT,
        what="the sender Secret issued again",
    )
    assert after
    # An event told: the Secret's watch or the pod that could not start without it.
    log = operator.log()
    assert (
        f"Secret {SENDER_NAME} deleted; reconciling Tenant {sending_tenant}" in log
        or "CreateContainerConfigError" in log
    )
    wait_for(
        lambda: any(
            started(p) and not config_error(p) and p.metadata.deletion_timestamp is None
            for p in sender_pods(core, namespace)
        ),
        timeout=POD_TIMEOUT,
        what="a new sender pod started with the new Secret",
    )
