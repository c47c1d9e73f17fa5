"""Campaigns deleted at once all go within what their deletion needs, also one whose resync
pass is running at the DELETE.

kopf stops an object's timer when the object is marked for deletion; a timer whose pass is
still running does not stop at once, and kopf then re-checks it only after
`settings.background.cancellation_polling` (60 s by default), keeping the finalizer until then,
although the pass ends and the deletion handler succeeds within seconds (CI-7: a Campaign of
test_dashboard_campaign's teardown went 61 s after its DELETE, right behind its resync pass).

Here the passes of two Campaigns are held mid-pass for real: the test holds an exclusive lock
on the `campaigns` table in PostgreSQL, which every pass of a tenant's Campaign reads. A third
Campaign, in a namespace of no tenant, never reads the database: its deletion shows what a
deletion needs. The held Campaigns are deleted with it, the lock is released, and they must be
gone within what was observed for a pass and for that deletion, well inside kopf's 60 s.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import asyncpg
import pytest
from kubernetes import client

from tests.integration.conftest import GROUP, VERSION, OperatorFactory, OperatorProcess, wait_for

pytestmark = pytest.mark.integration

KOPF_DEFAULT_POLLING = 60.0
"""kopf's `settings.background.cancellation_polling`: how late a deletion was on the old code."""
OPERATOR_POLLING = 1.0
"""What the operator sets it to (operator/__main__.py)."""


@pytest.fixture(scope="module")
def operator(operator_process: OperatorFactory) -> Iterator[OperatorProcess]:
    handle = operator_process()
    yield handle
    handle.stop()
    handle.assert_no_errors()


def campaign_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Campaign",
        "metadata": {"name": name},
        "spec": {
            "sendingDomainRef": {"name": "absent"},
            "from": {"address": "jane@deletion.test"},
            "subject": "Hello",
            "text": "Hi",
            "audience": {"lists": ["leads"]},
        },
    }


class TableLock:
    """An exclusive lock on `campaigns`, held by a connection of the test's own."""

    def __init__(self, dsn: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.conn: asyncpg.Connection = self.loop.run_until_complete(asyncpg.connect(dsn))
        self.transaction = self.conn.transaction()

    def take(self) -> None:
        async def take() -> None:
            await self.transaction.start()
            await self.conn.execute("LOCK TABLE campaigns IN ACCESS EXCLUSIVE MODE")

        self.loop.run_until_complete(take())

    def waiting(self) -> int:
        """Other sessions waiting for this lock: passes held mid-pass."""
        query = """
            SELECT count(*) FROM pg_locks
            WHERE relation = 'campaigns'::regclass AND NOT granted AND pid <> pg_backend_pid()
        """
        return int(self.loop.run_until_complete(self.conn.fetchval(query)))

    def release(self) -> None:
        if not self.conn.is_closed() and self.conn.is_in_transaction():
            self.loop.run_until_complete(self.transaction.rollback())

    def close(self) -> None:
        self.release()
        self.loop.run_until_complete(self.conn.close())
        self.loop.close()


def test_campaigns_deleted_mid_pass_go_without_waiting_for_kopfs_poll(
    operator: OperatorProcess,
    core: client.CoreV1Api,
    custom_objects: client.CustomObjectsApi,
    postgres_dsn: str,
) -> None:
    tenant = f"del-{secrets.token_hex(3)}"
    held_namespace = f"tenant-{tenant}"
    free_namespace = f"nodb-{secrets.token_hex(3)}"
    held = ("first", "second")
    custom_objects.create_cluster_custom_object(
        GROUP,
        VERSION,
        "tenants",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Tenant",
            "metadata": {"name": tenant},
            "spec": {
                "tier": "starter",
                "contactEmail": "ops@deletion.test",
                "postalAddress": {"street": "1 Penguin Way", "city": "Iceberg", "country": "AQ"},
            },
        },
    )
    core.create_namespace({"metadata": {"name": free_namespace}})
    lock = TableLock(postgres_dsn)
    try:
        wait_for(
            lambda: core.list_namespace(field_selector=f"metadata.name={held_namespace}").items,
            timeout=60,
            what="the tenant namespace",
        )

        def preflight(namespace: str, name: str) -> str | None:
            obj = custom_objects.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "campaigns", name
            )
            found = [
                c["reason"]
                for c in (obj.get("status") or {}).get("conditions") or []
                if c["type"] == "Preflight"
            ]
            return found[0] if found else None

        # The longest first pass observed (create to status): what a pass needs under this load.
        started = time.monotonic()
        where = [(held_namespace, name) for name in held] + [(free_namespace, "free")]
        for namespace, name in where:
            custom_objects.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "campaigns", campaign_body(name)
            )
        # Settled: the status the next passes compute again, so that a pass resuming after
        # the DELETE writes nothing (no event then tells kopf that the pass has ended).
        settled = {"first": "SendingDomainNotFound", "second": "SendingDomainNotFound"}
        settled["free"] = "TenantNotFound"
        for namespace, name in where:
            wait_for(
                partial(lambda n, c: preflight(n, c) == settled[c], namespace, name),
                timeout=60,
                what=f"{name} preflight {settled[name]}",
            )
        pass_seconds = time.monotonic() - started

        # Both tenant Campaigns' resync passes (3 s) now block in PostgreSQL, mid-pass.
        lock.take()
        wait_for(lambda: lock.waiting() >= len(held), timeout=30, what="both passes held")

        deleted = time.monotonic()
        for namespace, name in where:
            custom_objects.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, "campaigns", name
            )

        def gone(namespace: str, name: str) -> bool:
            items = custom_objects.list_namespaced_custom_object(
                GROUP, VERSION, namespace, "campaigns"
            )["items"]
            return all(item["metadata"]["name"] != name for item in items)

        # What a deletion needs (kopf's cycle, the handler, the finalizer's removal).
        wait_for(lambda: gone(free_namespace, "free"), timeout=60, what="free Campaign deleted")
        deletion_seconds = time.monotonic() - deleted
        assert not any(gone(held_namespace, name) for name in held), "held passes ended early"

        lock.release()
        # Each held Campaign: the rest of its pass, its deletion, and one poll of its timer.
        bound = 2 * (pass_seconds + deletion_seconds) + OPERATOR_POLLING
        assert bound < KOPF_DEFAULT_POLLING, (
            f"too loaded to tell (pass {pass_seconds:.1f} s, deletion {deletion_seconds:.1f} s)"
        )
        wait_for(
            lambda: all(gone(held_namespace, name) for name in held),
            timeout=bound,
            what=(
                f"the held Campaigns deleted within {bound:.1f} s of their passes resuming "
                f"(a pass took up to {pass_seconds:.1f} s, a deletion {deletion_seconds:.1f} s)"
            ),
        )
    finally:
        lock.close()
        for namespace in (held_namespace, free_namespace):
            custom_objects.delete_collection_namespaced_custom_object(
                GROUP, VERSION, namespace, "campaigns"
            )
        custom_objects.delete_cluster_custom_object(GROUP, VERSION, "tenants", tenant)
        wait_for(
            lambda: all(
                t["metadata"]["name"] != tenant
                for t in custom_objects.list_cluster_custom_object(GROUP, VERSION, "tenants")[
                    "items"
                ]
            ),
            timeout=KOPF_DEFAULT_POLLING * 2,
            what=f"Tenant {tenant} deleted",
        )
        core.delete_namespace(free_namespace)
