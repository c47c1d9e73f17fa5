"""An operator killed with SIGKILL in the middle of reconciling converges after a restart."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest
from kubernetes import client

from tests.integration.conftest import GROUP, VERSION, OperatorFactory, wait_for

pytestmark = pytest.mark.integration

# Enough tenants that the operator is still busy when the first one turns Ready.
NAMES = [f"crash-{i:02d}" for i in range(60)]


def ready_names(api: client.CustomObjectsApi) -> set[str]:
    ready = set()
    for item in api.list_cluster_custom_object(GROUP, VERSION, "tenants")["items"]:
        name = item["metadata"]["name"]
        status = item.get("status") or {}
        conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
        if (
            name in NAMES
            and conditions.get("Ready") == "True"
            and status.get("observedGeneration") == item["metadata"]["generation"]
        ):
            ready.add(name)
    return ready


def count_rows(dsn: str) -> dict[str, int]:
    async def fetch() -> dict[str, int]:
        connection = await asyncpg.connect(dsn)
        try:
            # This test's names only: other modules share the database (a node test's
            # tenant is called crash-<hex> too).
            rows = await connection.fetch(
                "SELECT name, count(*) AS n FROM tenants WHERE name = ANY($1) GROUP BY name",
                list(NAMES),
            )
        finally:
            await connection.close()
        return {row["name"]: row["n"] for row in rows}

    return asyncio.run(fetch())


def test_sigkill_mid_reconcile_then_restart_converges_without_duplicates(
    operator_process: OperatorFactory,
    custom_objects: client.CustomObjectsApi,
    api_client: client.ApiClient,
    postgres_dsn: str,
) -> None:
    first = operator_process()
    for name in NAMES:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Tenant",
            "metadata": {"name": name},
            "spec": {"tier": "professional", "contactEmail": f"ops@{name}.example.com"},
        }
        custom_objects.create_cluster_custom_object(GROUP, VERSION, "tenants", body)

    # Kill as soon as the first tenant is done: the rest are mid-reconcile or untouched.
    wait_for(
        lambda: ready_names(custom_objects), timeout=60, interval=0.05, what="a first Ready tenant"
    )
    first.kill()
    assert ready_names(custom_objects) != set(NAMES), "killed too late to test anything"

    second = operator_process()
    wait_for(
        lambda: ready_names(custom_objects) == set(NAMES),
        timeout=120,
        what="every tenant Ready after the restart",
    )
    time.sleep(4)  # one more resync period, to catch any late duplicate or error
    second.stop()
    second.assert_no_errors()

    apps = client.AppsV1Api(api_client)
    for name in NAMES:
        deployments = apps.list_namespaced_deployment(f"tenant-{name}").items
        assert [d.metadata.name for d in deployments] == ["penguinmails-sender"]
    assert count_rows(postgres_dsn) == dict.fromkeys(NAMES, 1)
