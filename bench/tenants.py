"""200 Tenants applied at once until all are Ready, then 1,000: time and operator peak RSS;
then the idle cost of 1,000 Tenants: API requests per minute at the production resync.

Baselines, measured in the same run: how long the API server alone takes to create (and delete)
the same 200 Tenant objects with no operator running (the ratio says what reconciling costs on
top of storing); and, for the idle cost, what the same passes would have requested had every
one been full (the requests of the full passes measured, per pass, times all the passes).
"""

from __future__ import annotations

import collections
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client

from penguinmails.bench.measure import peak_rss_mib, scrape
from penguinmails.devstack.ports import free_port
from penguinmails.devstack.stack import OPERATOR_COMMAND, Stack, api_client_for

GROUP, VERSION, PLURAL = "penguinmails.io", "v1alpha1", "tenants"
TIERS = ("starter", "professional", "business", "enterprise")
THREADS = 16
RESYNC_SECONDS = 60  # production's default (PM_RESYNC_SECONDS)
IDLE_SECONDS = 2 * RESYNC_SECONDS


def tenant_counters(port: int) -> collections.Counter[str]:
    """Tenant passes by depth and the requests they made, from the operator's metrics."""
    counts = collections.Counter[str]()
    for sample in scrape(port):
        labels = sample.labels
        if sample.name == "penguinmails_resync_passes_total" and labels["kind"] == "Tenant":
            counts[f"passes:{labels['depth']}"] += int(sample.value)
        elif sample.name == "penguinmails_kube_requests_total" and labels["controller"] == "Tenant":
            counts[f"requests:{labels['pass_']}"] += int(sample.value)
    return counts


def body(name: str, index: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Tenant",
        "metadata": {"name": name},
        "spec": {"tier": TIERS[index % len(TIERS)], "contactEmail": f"ops@{name}.example.com"},
    }


def create_all(api: client.CustomObjectsApi, names: list[str], offset: int = 0) -> None:
    with ThreadPoolExecutor(THREADS) as pool:
        list(
            pool.map(
                lambda item: api.create_cluster_custom_object(
                    GROUP, VERSION, PLURAL, body(item[1], item[0] + offset)
                ),
                enumerate(names),
            )
        )


def delete_all(api: client.CustomObjectsApi, names: list[str]) -> None:
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda n: api.delete_cluster_custom_object(GROUP, VERSION, PLURAL, n), names))


def count_ready(api: client.CustomObjectsApi, prefix: str) -> int:
    items = api.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
    ready = 0
    for item in items:
        if not item["metadata"]["name"].startswith(prefix):
            continue
        conditions = (item.get("status") or {}).get("conditions") or []
        if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
            ready += 1
    return ready


def wait_ready(api: client.CustomObjectsApi, prefix: str, expected: int, timeout: float) -> float:
    started = time.perf_counter()
    while count_ready(api, prefix) < expected:
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"only {count_ready(api, prefix)}/{expected} Ready after {timeout}s")
        time.sleep(0.5)
    return time.perf_counter() - started


def run(stack: Stack, base: Path) -> None:
    api_client = api_client_for(stack.kubeconfig, connections=THREADS)
    api = client.CustomObjectsApi(api_client)

    # Warm the API server's paths for Tenants first, so the baseline is not a cold start.
    warmup = [f"warmup-{i:04d}" for i in range(50)]
    create_all(api, warmup)
    delete_all(api, warmup)

    baseline_names = [f"baseline-{i:04d}" for i in range(200)]
    started = time.perf_counter()
    create_all(api, baseline_names)
    baseline = time.perf_counter() - started
    delete_all(api, baseline_names)

    log = (base / "bench-operator.log").open("ab")
    port = free_port()
    operator = subprocess.Popen(
        list(OPERATOR_COMMAND),
        env={
            **os.environ,
            **stack.env(),
            "PM_METRICS_PORT": str(port),
            "PM_RESYNC_SECONDS": str(RESYNC_SECONDS),
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        first = [f"t-{i:04d}" for i in range(200)]
        started = time.perf_counter()
        create_all(api, first)
        wait_ready(api, "t-", 200, timeout=900)
        at_200 = time.perf_counter() - started
        rss_200 = peak_rss_mib(operator.pid)

        rest = [f"t-{i:04d}" for i in range(200, 1000)]
        started = time.perf_counter()
        create_all(api, rest, offset=200)
        wait_ready(api, "t-", 1000, timeout=3600)
        at_1000 = time.perf_counter() - started
        rss_1000 = peak_rss_mib(operator.pid)

        # Idle: nothing changes; every Tenant's timer runs about twice.
        before = tenant_counters(port)
        time.sleep(IDLE_SECONDS)
        idle = tenant_counters(port) - before
    finally:
        operator.terminate()
        try:
            operator.wait(timeout=60)
        except subprocess.TimeoutExpired:  # 1,000 Tenants' handlers winding down
            operator.kill()
            operator.wait()
        log.close()

    print("benchmark: tenants")
    print(f"  baseline: API server creates 200 Tenants      {baseline:8.2f} s")
    print(
        f"  operator: 200 Tenants applied -> all Ready    {at_200:8.2f} s "
        f"({at_200 / baseline:.1f}x baseline)"
    )
    print(
        f"  operator: 800 more -> all 1,000 Ready         {at_1000:8.2f} s "
        f"({at_1000 / baseline:.1f}x baseline)"
    )
    print(f"  operator peak RSS at 200 Tenants              {rss_200:8.1f} MiB")
    print(f"  operator peak RSS at 1,000 Tenants            {rss_1000:8.1f} MiB")
    print(
        f"  per Tenant: {at_200 / 200 * 1000:.1f} ms reconcile vs "
        f"{baseline / 200 * 1000:.1f} ms create"
    )
    cheap, full = idle["passes:cheap"], idle["passes:full"]
    per_minute = 60 / IDLE_SECONDS
    requests = idle["requests:cheap"] + idle["requests:full"]
    # Had every pass been full: the full passes' requests per pass (at least a dozen, what
    # a full pass makes: namespace, 10 children, campaigns, pods) times all the passes.
    per_full = idle["requests:full"] / full if full else 12.0
    all_full = per_full * (cheap + full)
    print(
        f"  idle, 1,000 Tenants, resync {RESYNC_SECONDS} s: {cheap * per_minute:.0f} cheap + "
        f"{full * per_minute:.0f} full passes/min, {requests * per_minute:.0f} API requests/min "
        f"({requests * per_minute / 1000:.2f} per Tenant); every pass full: "
        f"{all_full * per_minute:.0f}/min ({requests / all_full if all_full else 0:.3f}x)"
    )
