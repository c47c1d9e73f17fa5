"""200 Tenants applied at once until all are Ready, then more, 1,000 at a time, up to
PM_BENCH_TENANTS (1,000 by default; the issue's figure is 10,000, which takes hours on a
loaded 2-core machine): time and operator peak RSS at each step; then the idle cost of them all
at the production resync, counted twice: by the operator (its requests per pass) and by the API
server (`apiserver_request_total`, by verb).

Baselines, measured in the same run: how long the API server alone takes to create (and delete)
the same 200 Tenant objects with no operator running (the ratio says what reconciling costs on
top of storing); for the idle cost, what the same passes would have requested had every one
been full (the requests of the full passes measured, per pass, times all the passes), and the
API server's own request rate with no operator running (its control plane's traffic, taken
off the idle figure).
"""

from __future__ import annotations

import collections
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

from penguinmails.bench.measure import peak_rss_mib, samples, scrape
from penguinmails.devstack.ports import free_port
from penguinmails.devstack.stack import OPERATOR_COMMAND, Stack, api_client_for

GROUP, VERSION, PLURAL = "penguinmails.io", "v1alpha1", "tenants"
TIERS = ("starter", "professional", "business", "enterprise")
THREADS = 16
RESYNC_SECONDS = 60  # production's default (PM_RESYNC_SECONDS)
IDLE_SECONDS = 2 * RESYNC_SECONDS
COUNT = int(os.environ.get("PM_BENCH_TENANTS", "1000"))
STEP = 1000
BASELINE_IDLE_SECONDS = 60.0


def apiserver_requests(api_client: client.ApiClient) -> collections.Counter[str]:
    """`apiserver_request_total` by "VERB resource[/subresource]", from the API server's own
    metrics (which client made a request is not among its labels: the resource tells)."""
    method, url, headers, body, post = api_client.param_serialize(
        "GET", "/metrics", header_params={"Accept": "text/plain"}, auth_settings=["BearerToken"]
    )
    response = api_client.call_api(method, url, headers, body, post, _request_timeout=60)
    response.read()
    counts = collections.Counter[str]()
    for sample in samples(response.data.decode()):
        if sample.name == "apiserver_request_total":
            labels = sample.labels
            sub = f"/{labels['subresource']}" if labels.get("subresource") else ""
            counts[f"{labels['verb']} {labels.get('resource', '')}{sub}"] += int(sample.value)
    return counts


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
    ready = 0
    while ready < expected:
        try:
            ready = count_ready(api, prefix)
        except (ApiException, urllib3.exceptions.HTTPError) as error:
            # A loaded API server times a large list out (504) or drops it: poll again.
            if isinstance(error, ApiException) and (error.status or 0) < 500:
                raise
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"only {ready}/{expected} Ready after {timeout}s")
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
    # The control plane's own requests while nothing else runs (leases, controllers' syncs).
    time.sleep(10)  # the deletions' echoes (garbage collection, namespace controller) settle
    before_apiserver = apiserver_requests(api_client)
    time.sleep(BASELINE_IDLE_SECONDS)
    quiet = apiserver_requests(api_client) - before_apiserver

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
        first = [f"t-{i:05d}" for i in range(200)]
        started = time.perf_counter()
        create_all(api, first)
        wait_ready(api, "t-", 200, timeout=900)
        at_200 = time.perf_counter() - started
        rss_200 = peak_rss_mib(operator.pid)

        # Then 1,000 at a time: (count, seconds from its step's apply to all Ready, peak RSS).
        steps: list[tuple[int, float, float]] = []
        done = 200
        while done < COUNT:
            upto = min(COUNT, (done // STEP + 1) * STEP)
            started = time.perf_counter()
            create_all(api, [f"t-{i:05d}" for i in range(done, upto)], offset=done)
            wait_ready(api, "t-", upto, timeout=7200)
            steps.append((upto, time.perf_counter() - started, peak_rss_mib(operator.pid)))
            done = upto

        # Idle: nothing changes; every Tenant's timer runs about twice.
        time.sleep(10)  # the last step's echoes settle
        before = tenant_counters(port)
        before_apiserver = apiserver_requests(api_client)
        time.sleep(IDLE_SECONDS)
        idle = tenant_counters(port) - before
        served = apiserver_requests(api_client) - before_apiserver
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
    previous = 200
    for upto, seconds, _ in steps:
        print(
            f"  operator: {upto - previous:,} more -> all {upto:,} Ready".ljust(48)
            + f"{seconds:8.2f} s ({seconds / baseline:.1f}x baseline)"
        )
        previous = upto
    print(f"  operator peak RSS at 200 Tenants              {rss_200:8.1f} MiB")
    for upto, _, rss in steps:
        print(f"  operator peak RSS at {upto:,} Tenants".ljust(48) + f"{rss:8.1f} MiB")
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
        f"  idle, {COUNT:,} Tenants, resync {RESYNC_SECONDS} s: {cheap * per_minute:.0f} cheap + "
        f"{full * per_minute:.0f} full passes/min, {requests * per_minute:.0f} API requests/min "
        f"({requests * per_minute / 1000:.2f} per Tenant); every pass full: "
        f"{all_full * per_minute:.0f}/min ({requests / all_full if all_full else 0:.3f}x)"
    )
    quiet_rate = _by_verb(quiet, BASELINE_IDLE_SECONDS)
    idle_rate = _by_verb(served, IDLE_SECONDS)
    extra = {verb: idle_rate.get(verb, 0) - quiet_rate.get(verb, 0) for verb in idle_rate}
    print(
        "  baseline: API server, no operator            "
        f"{sum(quiet_rate.values()):8.2f} requests/s "
        + " ".join(f"{v}={r:.2f}" for v, r in sorted(quiet_rate.items()) if r)
    )
    print(
        f"  API server, idle with {COUNT:,} Tenants".ljust(48)
        + f"{sum(idle_rate.values()):8.2f} requests/s "
        + " ".join(f"{v}={r:.2f}" for v, r in sorted(idle_rate.items()) if r)
    )
    print(
        "  idle minus baseline (operator + control plane) "
        f"{sum(extra.values()):8.2f} requests/s (target under 5)"
    )
    print(f"  machine load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    busiest = sorted(served.items(), key=lambda item: -item[1])[:8]
    print(
        "  idle requests by resource: "
        + ", ".join(f"{what} {n / IDLE_SECONDS:.2f}/s" for what, n in busiest)
    )


def _by_verb(counts: collections.Counter[str], seconds: float) -> dict[str, float]:
    rates: dict[str, float] = collections.defaultdict(float)
    for what, n in counts.items():
        rates[what.split(" ", 1)[0]] += n / seconds
    return dict(rates)
