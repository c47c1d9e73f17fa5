"""A hand-edited or deleted sender Secret is repaired within seconds through the children watch,
by the real operator process holding only the Helm chart's RBAC (which lets it list and watch
Secrets by the one name `penguinmails-sender`, and no other), at production timers.

Nothing else can have repaired it here: the resync (60 s) never reads the Secret, and the full
pass that does runs every 10 hours (PM_FULL_RESYNC_SECONDS); no sender pod runs (no node), so
the pod watch cannot tell either. The log says which watch event nudged the Tenant.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from redis.asyncio import Redis

from penguinmails.operator.tenant_resources import SENDER_NAME, namespace_for
from tests.integration.conftest import (
    GROUP,
    VERSION,
    OperatorFactory,
    OperatorProcess,
    refusals,
    wait_for,
)
from tests.integration.sender_support import platform_sender_secret
from tests.integration.test_chart import (
    ChartIdentity,
    chart_identity,
    helm,
    private_dir,
    release_namespace,
)
from tests.integration.test_operator_events import PRODUCTION_RESYNC_SECONDS
from tests.integration.test_tenant_sender_secret import can_log_in

pytestmark = pytest.mark.integration

__all__ = ["chart_identity", "helm", "private_dir", "release_namespace"]  # fixtures, reused

PLATFORM = "penguinmails-platform"
PLATFORM_SECRET = "pm-sender-watch"
EDITOR = "kubectl-edit"


@pytest.fixture(scope="module")
def operator(
    chart_identity: ChartIdentity,
    operator_process: OperatorFactory,
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
        suppression_key="watch-suppression-key",
    )
    (writer,) = [
        d["metadata"]["name"]
        for d in chart_identity.documents
        if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("-secret-writer")
    ]
    # KUBECONFIG as well as PM_KUBECONFIG: kopf's own watches must carry the chart's identity
    # too, or the test proves nothing about its RBAC.
    handle = operator_process(
        kubeconfig=chart_identity.kubeconfig,
        KUBECONFIG=str(chart_identity.kubeconfig),
        PM_RESYNC_SECONDS=str(PRODUCTION_RESYNC_SECONDS),
        PM_SENDER_SECRET=reference,
        PM_SECRET_WRITER_CLUSTERROLE=writer,
        PM_OPERATOR_SERVICE_ACCOUNT=f"{chart_identity.namespace}/{chart_identity.service_account}",
    )
    yield handle
    handle.stop()
    handle.assert_no_errors()
    core.delete_namespaced_secret(PLATFORM_SECRET, PLATFORM)


def sender_secret(core: client.CoreV1Api, namespace: str) -> tuple[str, dict[str, str]] | None:
    """The sender Secret's uid and decoded data, or None while it does not exist."""
    try:
        found = core.read_namespaced_secret(SENDER_NAME, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    data = {key: base64.b64decode(value).decode() for key, value in (found.data or {}).items()}
    return str(found.metadata.uid), data


async def authenticates(data: dict[str, str]) -> bool:
    """Both logins of the sender Secret work: the database's and Redis's."""
    if not await can_log_in(data["PM_DATABASE_URL"]):
        return False
    redis = Redis.from_url(data["PM_REDIS_URL"])
    try:
        return bool(await redis.ping())
    finally:
        await redis.aclose()


def elsewhere(url: str) -> str:
    """The same login (user and password) pointed at another host."""
    parts = urlsplit(url)
    login = parts.netloc.rsplit("@", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{login}@tampered.invalid:5432"))


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def test_an_edited_or_deleted_sender_secret_is_repaired_from_the_watch(
    operator: OperatorProcess,
    custom_objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
) -> None:
    name = f"sw-{secrets.token_hex(3)}"
    namespace = namespace_for(name)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Tenant",
        "metadata": {"name": name},
        "spec": {"tier": "starter", "contactEmail": f"ops@{name}.example.com"},
    }
    custom_objects.create_cluster_custom_object(GROUP, VERSION, "tenants", body)
    try:
        uid, issued = wait_for(
            lambda: sender_secret(core, namespace), timeout=120, what="the sender Secret issued"
        )
        assert await authenticates(issued)

        # A person edits it: the database URL pointed elsewhere, the token key replaced.
        core.patch_namespaced_secret(
            SENDER_NAME,
            namespace,
            {
                "data": {
                    "PM_DATABASE_URL": b64(elsewhere(issued["PM_DATABASE_URL"])),
                    "PM_TOKEN_KEY": b64("tampered"),
                }
            },
            field_manager=EDITOR,
        )
        restored = wait_for(
            lambda: (found := sender_secret(core, namespace)) and found[1] == issued and found,
            timeout=60,
            what="the edited sender Secret restored",
        )
        # The same Secret, its logins kept (a running sender keeps working) and working.
        assert restored[0] == uid
        assert await authenticates(restored[1])
        log = operator.log()
        assert f"Secret {SENDER_NAME} edited by {EDITOR}; reconciling Tenant {name}" in log

        # A person deletes it: issued again, with new passwords (the old ones lived only there).
        core.delete_namespaced_secret(SENDER_NAME, namespace)
        reissued = wait_for(
            lambda: (found := sender_secret(core, namespace)) and found[0] != uid and found,
            timeout=60,
            what="the deleted sender Secret issued again",
        )
        assert await authenticates(reissued[1])
        assert not await can_log_in(issued["PM_DATABASE_URL"])
        log = operator.log()
        assert f"Secret {SENDER_NAME} deleted; reconciling Tenant {name}" in log

        # Under the chart's RBAC nothing was refused, and no password reached the log.
        found = refusals(log, namespace)
        assert not found and "Not enough permissions" not in log, "\n".join(found[-20:])
        for data in (issued, reissued[1]):
            for url in (data["PM_DATABASE_URL"], data["PM_REDIS_URL"]):
                password = urlsplit(url).password
                assert password and password not in log
    finally:
        custom_objects.delete_cluster_custom_object(GROUP, VERSION, "tenants", name)
        wait_for(
            lambda: (
                name
                not in {
                    t["metadata"]["name"]
                    for t in custom_objects.list_cluster_custom_object(GROUP, VERSION, "tenants")[
                        "items"
                    ]
                }
            ),
            timeout=120,
            what=f"Tenant {name} deleted",
        )
