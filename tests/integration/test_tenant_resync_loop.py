"""The Tenant resync at the production interval (PM_RESYNC_SECONDS default, 60 s), through the
real operator process: one operator-wide loop (operator/resync_loop.py), not a kopf timer per
Tenant, picks up what no watch can see.

What a cheap pass handles is the database's side: the month's deliveries, which the senders
record in PostgreSQL, reach `status.emailsSentThisMonth` (and the usage notices) only through
the resync. test_billing_usage.py checks the same path, and what follows from the count (the
allowance gate, overage to Stripe), with the conftest's 3 s resync; this module proves it at
the default, and that the loop forgets a deleted Tenant without error.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from kubernetes import client

from penguinmails.bench.measure import scrape
from penguinmails.common.db.tenants import get_tenant
from penguinmails.devstack.ports import free_port
from tests.integration.conftest import GROUP, VERSION, OperatorFactory, OperatorProcess, wait_for
from tests.integration.test_billing_usage import record_sent
from tests.integration.test_tenant_operator import tenant_body, wait_ready

pytestmark = pytest.mark.integration

PRODUCTION_RESYNC_SECONDS = 60.0  # PM_RESYNC_SECONDS's default (common/settings.py)
SENT = (3, 5)  # deliveries recorded per Tenant, different so a mix-up shows


@pytest.fixture(scope="module")
def operator(operator_process: OperatorFactory) -> Iterator[tuple[OperatorProcess, int]]:
    port = free_port()
    handle = operator_process(
        PM_METRICS_PORT=str(port), PM_RESYNC_SECONDS=str(PRODUCTION_RESYNC_SECONDS)
    )
    yield handle, port
    handle.stop()
    handle.assert_no_errors()


def resync_passes(port: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for sample in scrape(port, timeout=10):
        if sample.name == "penguinmails_resync_passes_total" and sample.labels["kind"] == "Tenant":
            counts[sample.labels["depth"]] = counts.get(sample.labels["depth"], 0) + int(
                sample.value
            )
    return counts


def sent_this_month(api: client.CustomObjectsApi, name: str) -> int | None:
    obj = api.get_cluster_custom_object(GROUP, VERSION, "tenants", name)
    value = (obj.get("status") or {}).get("emailsSentThisMonth")
    return None if value is None else int(value)


async def test_deliveries_reach_the_status_from_the_loop_at_the_default_interval(
    operator: tuple[OperatorProcess, int],
    custom_objects: client.CustomObjectsApi,
    db_pool: asyncpg.Pool,
) -> None:
    handle, port = operator
    api = custom_objects
    names = [f"loop-{secrets.token_hex(3)}" for _ in SENT]
    for name in names:
        api.create_cluster_custom_object(GROUP, VERSION, "tenants", tenant_body(name))
    for name in names:
        await asyncio.to_thread(wait_ready, api, name, 120)
        assert sent_this_month(api, name) == 0
    ready_at = time.monotonic()
    before = resync_passes(port)

    # The senders record deliveries in the database: no Kubernetes object changes, so no
    # watch event, no change pass; only a resync can count them.
    for name, count in zip(names, SENT, strict=True):
        row = await get_tenant(db_pool, name)
        assert row is not None
        await record_sent(db_pool, row.id, count, datetime.now(UTC))

    # A Tenant joins the loop's next round once reconciled, and each round spreads its
    # passes over one interval: counted within two intervals (the margin: the loaded machine).
    for name, count in zip(names, SENT, strict=True):
        await asyncio.to_thread(
            wait_for,
            lambda n=name, c=count: sent_this_month(api, n) == c,  # type: ignore[misc]
            timeout=2 * PRODUCTION_RESYNC_SECONDS + 30,
            what=f"{name}'s {count} deliveries counted",
        )
    counted_after = time.monotonic() - ready_at
    after = resync_passes(port)
    cheap = after.get("cheap", 0) - before.get("cheap", 0)
    full = after.get("full", 0) - before.get("full", 0)
    print(f"\ncounted {counted_after:.0f} s after Ready: {cheap} cheap and {full} full resyncs")
    # Counted by cheap passes (no full pass is due for ten hours), and not by a flood of them:
    # one per Tenant per interval at most, plus the other modules' Tenants still known.
    assert cheap >= len(names) and full == 0
    rounds = counted_after / PRODUCTION_RESYNC_SECONDS + 2  # rounds a window can touch
    assert cheap <= rounds * len(resync_known(api))

    # Deleted: its cleanup forgets it, so the loop stops passing it (the operator's log
    # shows no error: the module's fixture checks it at the end).
    for name in names:
        api.delete_cluster_custom_object(GROUP, VERSION, "tenants", name)
    for name in names:
        await asyncio.to_thread(
            wait_for,
            lambda n=name: (
                n  # type: ignore[misc]
                not in {t["metadata"]["name"] for t in resync_known(api)}
            ),
            timeout=120,
            what=f"Tenant {name} gone",
        )
    assert handle.process is not None and handle.process.poll() is None


def resync_known(api: client.CustomObjectsApi) -> list[dict[str, Any]]:
    """Every Tenant in the cluster (the most the loop can know)."""
    return list(api.list_cluster_custom_object(GROUP, VERSION, "tenants")["items"])
