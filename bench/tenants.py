"""200 Tenants applied at once until all are Ready, then more, 1,000 at a time, up to
PM_BENCH_TENANTS (1,000 by default; the issue's figure is 10,000, which takes hours on a
loaded 2-core machine): time and operator peak RSS at each step; then, once the control plane
has caught up with the creation, the idle cost of them all at the production resync for
PM_BENCH_IDLE_SECONDS (five minutes), counted twice: by the operator (its requests per pass)
and by the API server (`apiserver_request_total` by verb, resource and client:
bench/apiserver.py); then the same window with the operator stopped; then a restart (every
Tenant resumed: time, peak RSS, requests).

Baselines, measured in the same run: how long the API server alone takes to create (and delete)
the same 200 Tenant objects with no operator running (the ratio says what reconciling costs on
top of storing); for the idle cost, what the same passes would have requested had every one
been full (the requests of the full passes measured, per pass, times all the passes), the
API server's own request rate with no operator and no Tenants, and with the Tenants but the
operator stopped (the control plane's share, taken off the idle figure).
"""

from __future__ import annotations

import collections
import os
import subprocess
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from kubernetes import client

from penguinmails.bench.apiserver import Served, breakdown, served, settle
from penguinmails.bench.measure import peak_rss_mib, scrape
from penguinmails.bench.watching import Tally, has_condition
from penguinmails.devstack.ports import free_port
from penguinmails.devstack.stack import OPERATOR_COMMAND, Stack, api_client_for

GROUP, VERSION, PLURAL = "penguinmails.io", "v1alpha1", "tenants"
TIERS = ("starter", "professional", "business", "enterprise")
THREADS = 16
RESYNC_SECONDS = 60  # production's default (PM_RESYNC_SECONDS)
IDLE_SECONDS = float(os.environ.get("PM_BENCH_IDLE_SECONDS", "300"))  # the five minutes
COUNT = int(os.environ.get("PM_BENCH_TENANTS", "1000"))
STEP = 1000
BASELINE_IDLE_SECONDS = 60.0
# The restart (every Tenant resumed with a full pass) is the longest phase at 10,000 Tenants:
# PM_BENCH_RESTART=0 leaves it out when the time there is does not allow it.
RESTART = os.environ.get("PM_BENCH_RESTART", "1") != "0"


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


def ready_tenant(item: Mapping[str, Any]) -> bool | None:
    """A bench Tenant (named t-…) that is Ready; None for any other."""
    if item["metadata"]["name"].startswith("t-") and has_condition(item, "Ready"):
        return True
    return None


def wait_ready(tally: Tally[bool], expected: int, timeout: float) -> None:
    # A watch, not a list of every Tenant twice a second: at 10,000 that list alone would
    # take the cores the operator is measured on.
    if not tally.wait(lambda ready: len(ready) >= expected, timeout):
        raise TimeoutError(f"only {len(tally.summaries)}/{expected} Ready after {timeout}s")


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
    before_apiserver = served(api_client)
    time.sleep(BASELINE_IDLE_SECONDS)
    quiet = served(api_client) - before_apiserver

    log = (base / "bench-operator.log").open("ab")
    port = free_port()
    operator = _start(stack, port, log)
    ready = Tally(api, GROUP, VERSION, PLURAL, ready_tenant)
    try:
        first = [f"t-{i:05d}" for i in range(200)]
        started = time.perf_counter()
        create_all(api, first)
        wait_ready(ready, 200, timeout=900)
        at_200 = time.perf_counter() - started
        rss_200 = peak_rss_mib(operator.pid)
        _progress(f"200 Tenants Ready in {at_200:.1f} s, operator peak RSS {rss_200:.1f} MiB")

        # Then 1,000 at a time: (count, seconds from its step's apply to all Ready, peak RSS).
        steps: list[tuple[int, float, float]] = []
        done = 200
        while done < COUNT:
            upto = min(COUNT, (done // STEP + 1) * STEP)
            started = time.perf_counter()
            create_all(api, [f"t-{i:05d}" for i in range(done, upto)], offset=done)
            wait_ready(ready, upto, timeout=7200)
            steps.append((upto, time.perf_counter() - started, peak_rss_mib(operator.pid)))
            done = upto
            _progress(
                f"{upto:,} Tenants Ready, {steps[-1][1]:.1f} s for this step,"
                f" operator peak RSS {steps[-1][2]:.1f} MiB"
            )

        # Idle: nothing changes; every Tenant's timer runs once a minute.
        settled = settle(api_client)
        _progress(f"control plane caught up {settled:.0f} s after; idle window")
        before = tenant_counters(port)
        before_apiserver = served(api_client)
        time.sleep(IDLE_SECONDS)
        idle = tenant_counters(port) - before
        with_operator = served(api_client) - before_apiserver
    finally:
        _stop(operator)
        log.close()
    # The same objects, the operator stopped: the control plane's own share of the idle
    # figure (quota and namespace controllers re-syncing every namespace). What the window
    # with the operator served beyond it is the operator's.
    time.sleep(10)  # the operator's last watches closing are counted in neither window
    before_apiserver = served(api_client)
    time.sleep(IDLE_SECONDS)
    without_operator = served(api_client) - before_apiserver

    # A restart: kopf lists every object (in pages) and resumes each Tenant with a full pass,
    # the operator's most expensive moment in requests and memory.
    _progress(
        f"idle with the operator {with_operator.rate(IDLE_SECONDS):.2f} requests/s,"
        f" without it {without_operator.rate(IDLE_SECONDS):.2f} requests/s"
    )
    restarted = _restart(stack, port, base, api_client) if RESTART else None

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
        per_1000 = (rss - rss_200) / (upto - 200) * 1000
        print(
            f"  operator peak RSS at {upto:,} Tenants".ljust(48)
            + f"{rss:8.1f} MiB ({per_1000:.1f} MiB per 1,000 Tenants above 200)"
        )
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
        f"  control plane caught up with the creation {settled:.0f} s after all were Ready"
        " (two 15 s windows without a write but leases; it waits 900 s at most)"
    )
    print(
        f"  idle, {COUNT:,} Tenants, resync {RESYNC_SECONDS} s: {cheap * per_minute:.0f} cheap + "
        f"{full * per_minute:.0f} full passes/min, {requests * per_minute:.0f} API requests/min "
        f"({requests * per_minute / 1000:.2f} per Tenant); every pass full: "
        f"{all_full * per_minute:.0f}/min ({requests / all_full if all_full else 0:.3f}x)"
    )
    windows = (
        ("baseline: API server, no operator, no Tenants", quiet, BASELINE_IDLE_SECONDS),
        (f"API server, idle {IDLE_SECONDS:.0f} s, {COUNT:,} Tenants", with_operator, IDLE_SECONDS),
        (f"the same {COUNT:,} Tenants, operator stopped", without_operator, IDLE_SECONDS),
    )
    for title, window, seconds in windows:
        lines = breakdown(window, seconds)
        print(f"  {title}".ljust(48) + lines[0])
        for line in lines[1:]:
            print("  " + line)
    operator_rate = with_operator.rate(IDLE_SECONDS) - without_operator.rate(IDLE_SECONDS)
    exempt = with_operator.clients["exempt"] / IDLE_SECONDS
    print(
        f"  idle, the operator's share: {operator_rate:.2f} requests/s (with minus without;"
        f" {exempt:.2f}/s from system:masters, the operator and the bench's two scrapes)"
        " (target under 5)"
    )
    if restarted is not None:
        resumed, rss_restart, restart = restarted
        print(
            f"  restart with {COUNT:,} Tenants: all resumed in {resumed:.0f} s, peak RSS "
            f"{rss_restart:.1f} MiB, {sum(restart.requests.values()):,} requests served "
            f"({sum(restart.requests.values()) / COUNT:.1f} per Tenant, control plane's "
            "included)"
        )
    print(f"  machine load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


def _progress(line: str) -> None:
    """A phase's figures as soon as they are known: a run of hours can be followed, and what
    it measured is kept if it is stopped before the end."""
    print(f"progress {time.strftime('%H:%M:%S')}: {line}", flush=True)


def _restart(
    stack: Stack, port: int, base: Path, api_client: client.ApiClient
) -> tuple[float, float, Served]:
    """The operator started again over every Tenant: seconds until all were resumed, its
    peak RSS, and the requests the API server served meanwhile."""
    before_apiserver = served(api_client)
    started = time.perf_counter()
    with (base / "bench-operator.log").open("ab") as log:
        operator = _start(stack, port, log)
        try:
            while _change_passes(port) < COUNT:
                if time.perf_counter() - started > 7200:
                    raise TimeoutError("the restarted operator did not resume every Tenant")
                time.sleep(2)
            resumed = time.perf_counter() - started
            rss_restart = peak_rss_mib(operator.pid)
        finally:
            _stop(operator)
    return resumed, rss_restart, served(api_client) - before_apiserver


def _start(stack: Stack, port: int, log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
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


def _change_passes(port: int) -> int:
    """Tenant passes that were not timer passes (creations, changes, resumes), 0 until the
    operator's metrics answer."""
    try:
        samples = scrape(port, timeout=10)
    except OSError:
        return 0
    passes = 0.0
    for sample in samples:
        if sample.labels.get("kind") != "Tenant":
            continue
        if sample.name == "penguinmails_reconcile_total":
            passes += sample.value
        elif sample.name == "penguinmails_resync_passes_total":
            passes -= sample.value
    return int(passes)


def _stop(operator: subprocess.Popen[bytes]) -> None:
    operator.terminate()
    try:
        operator.wait(timeout=60)
    except subprocess.TimeoutExpired:  # thousands of Tenants' handlers winding down
        operator.kill()
        operator.wait()
