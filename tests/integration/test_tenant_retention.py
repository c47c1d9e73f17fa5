"""A deleted tenant's rows stay for the retention period, then the operator purges them."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from kubernetes import client

from tests.integration.conftest import GROUP, VERSION, OperatorFactory, wait_for

pytestmark = pytest.mark.integration


def row_count(dsn: str, name: str) -> int:
    async def fetch() -> int:
        connection = await asyncpg.connect(dsn)
        try:
            return int(
                await connection.fetchval("SELECT count(*) FROM tenants WHERE name = $1", name)
            )
        finally:
            await connection.close()

    return asyncio.run(fetch())


def test_rows_of_a_deleted_tenant_are_purged_after_retention(
    operator_process: OperatorFactory, custom_objects: client.CustomObjectsApi, postgres_dsn: str
) -> None:
    operator = operator_process(PM_TENANT_RETENTION_DAYS="0", PM_PURGE_INTERVAL_SECONDS="1")
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Tenant",
        "metadata": {"name": "shortlived"},
        "spec": {"tier": "starter", "contactEmail": "ops@shortlived.example.com"},
    }
    custom_objects.create_cluster_custom_object(GROUP, VERSION, "tenants", body)
    wait_for(lambda: row_count(postgres_dsn, "shortlived") == 1, what="tenant row written")
    custom_objects.delete_cluster_custom_object(GROUP, VERSION, "tenants", "shortlived")
    wait_for(
        lambda: row_count(postgres_dsn, "shortlived") == 0,
        timeout=30,
        what="row purged once retention (0 days) passed",
    )
    operator.stop()
    operator.assert_no_errors()
