"""200 Tenants applied at once until all are Ready, then 1,000: time and operator peak RSS.

Baseline, measured in the same run: how long the API server alone takes to create (and delete)
the same 200 Tenant objects with no operator running. The ratio says what reconciling costs on
top of storing.
"""

from __future__ import annotations

import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client

from penguinmails.bench.measure import peak_rss_mib
from penguinmails.devstack.stack import OPERATOR_COMMAND, Stack, api_client_for

GROUP, VERSION, PLURAL = "penguinmails.io", "v1alpha1", "tenants"
TIERS = ("starter", "professional", "business", "enterprise")
THREADS = 16


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
    operator = subprocess.Popen(
        list(OPERATOR_COMMAND),
        env={**os.environ, **stack.env(), "PM_METRICS_PORT": "0", "PM_RESYNC_SECONDS": "300"},
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
    finally:
        operator.terminate()
        operator.wait(timeout=30)
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
