"""The Tenant resync is cheap when nothing changed (its edits and deletions are repaired from
the children's watch: test_operator_events.py).

Counted from the operator's own metrics (`penguinmails_kube_requests_total`, by pass), so
the figures are the requests the controller made, not an estimate.
"""

from __future__ import annotations

import collections
import secrets
import time
from collections.abc import Iterator

import pytest
from kubernetes import client

from penguinmails.bench.measure import scrape
from penguinmails.devstack.ports import free_port
from tests.integration.conftest import GROUP, VERSION, OperatorFactory, OperatorProcess, wait_for
from tests.integration.test_tenant_operator import tenant_body, wait_ready

pytestmark = pytest.mark.integration

RESYNC_SECONDS = 3.0  # the conftest's; the cheapness does not depend on it
WRITES = ("apply", "patch", "delete")


class Metrics:
    def __init__(self, port: int) -> None:
        self.port = port

    def read(self) -> collections.Counter[tuple[str, ...]]:
        counts = collections.Counter[tuple[str, ...]]()
        for sample in scrape(self.port, timeout=10):
            labels = sample.labels
            if sample.name == "penguinmails_kube_requests_total":
                key = ("requests", labels["controller"], labels["pass_"], labels["verb"])
            elif sample.name == "penguinmails_resync_passes_total":
                key = ("passes", labels["kind"], labels["depth"], "")
            else:
                continue
            counts[key] += int(sample.value)
        return counts


@pytest.fixture(scope="module")
def operator(operator_process: OperatorFactory) -> Iterator[tuple[OperatorProcess, Metrics]]:
    port = free_port()
    handle = operator_process(PM_METRICS_PORT=str(port))
    yield handle, Metrics(port)
    handle.stop()
    handle.assert_no_errors()


@pytest.fixture()
def tenants(
    custom_objects: client.CustomObjectsApi, operator: tuple[OperatorProcess, Metrics]
) -> Iterator[list[str]]:
    names = [f"rs-{secrets.token_hex(3)}" for _ in range(3)]
    for name in names:
        custom_objects.create_cluster_custom_object(GROUP, VERSION, "tenants", tenant_body(name))
    for name in names:
        wait_ready(custom_objects, name)
    yield names
    for name in names:
        custom_objects.delete_cluster_custom_object(GROUP, VERSION, "tenants", name)
    for name in names:
        wait_for(
            lambda n=name: (
                n  # type: ignore[misc]
                not in {
                    t["metadata"]["name"]
                    for t in custom_objects.list_cluster_custom_object(GROUP, VERSION, "tenants")[
                        "items"
                    ]
                }
            ),
            timeout=120,
            what=f"Tenant {name} gone",
        )


def test_an_idle_resync_writes_nothing_and_reads_at_most_one_object(
    operator: tuple[OperatorProcess, Metrics], tenants: list[str]
) -> None:
    _, metrics = operator
    # Every Tenant's first timer pass after its full one may itself be full (a change pass
    # racing it); wait for a cheap one, then watch a window of several resyncs.
    wait_for(
        lambda: metrics.read()[("passes", "Tenant", "cheap", "")] >= len(tenants),
        timeout=10 * RESYNC_SECONDS,
        what="cheap resyncs",
    )
    before = metrics.read()
    time.sleep(4 * RESYNC_SECONDS)
    after = metrics.read()
    delta = after - before
    cheap, full = delta[("passes", "Tenant", "cheap", "")], delta[("passes", "Tenant", "full", "")]
    by_pass = {
        depth: {
            verb: delta[("requests", "Tenant", depth, verb)]
            for verb in ("get", "list", *WRITES)
            if delta[("requests", "Tenant", depth, verb)]
        }
        for depth in ("cheap", "full")
    }
    print(f"\nTenant resyncs in {4 * RESYNC_SECONDS:.0f} s: {cheap} cheap, {full} full: {by_pass}")
    # Our three Tenants alone pass about 4 times each (other modules' Tenants add to it).
    assert cheap >= 3 * len(tenants)
    assert not any(delta[("requests", "Tenant", "cheap", verb)] for verb in ("list", *WRITES))
    # One read per pass at most (the sender Secret, when the platform configures one).
    assert delta[("requests", "Tenant", "cheap", "get")] <= cheap
