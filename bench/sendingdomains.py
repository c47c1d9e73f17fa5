"""2,000 SendingDomains (PM_BENCH_DOMAINS) applied at once until all are DNSVerified, against a
local Knot server.

Baseline, measured in the same run against the same server: a plain dnspython loop sending one
TSIG-signed UPDATE per record, one after another. The operator's rate counts every record it
published (each with its ownership marker) over the whole time from apply to all verified, so it
includes key generation, API writes and verification on top of the DNS updates themselves.
After PM_BENCH_DOMAINS_TIMEOUT seconds (3,600) it prints what it reached, marked as partial.
"""

from __future__ import annotations

import base64
import os
import subprocess
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dns.query
import dns.tsig
import dns.update
from kubernetes import client

from penguinmails.bench.measure import peak_rss_mib
from penguinmails.bench.watching import Tally, has_condition
from penguinmails.devstack.knot import KnotServer, minimal_zone
from penguinmails.devstack.stack import OPERATOR_COMMAND, Stack, api_client_for

GROUP, VERSION, PLURAL = "penguinmails.io", "v1alpha1", "sendingdomains"
ZONE = "bench.test"
NAMESPACE = "bench-sendingdomains"
COUNT = int(os.environ.get("PM_BENCH_DOMAINS", "2000"))
TIMEOUT_SECONDS = float(os.environ.get("PM_BENCH_DOMAINS_TIMEOUT", "3600"))
BASELINE_UPDATES = 2000
THREADS = 16


def body(index: int, knot: KnotServer) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SendingDomain",
        "metadata": {"name": f"d-{index:04d}"},
        "spec": {
            "domain": f"d{index:04d}.{ZONE}",
            "zone": ZONE,
            "dnsProvider": knot.rfc2136_provider(),
            "mx": {"enabled": False},
            "verifyInterval": "10m",
        },
    }


def baseline_updates_per_second(knot: KnotServer) -> float:
    """One signed UPDATE per record, sequentially: what a naive publisher achieves."""
    keyring = knot.tsig.keyring()
    started = time.perf_counter()
    for i in range(BASELINE_UPDATES):
        update = dns.update.UpdateMessage(
            ZONE + ".",
            keyring=keyring,
            keyname=knot.tsig.key_name,
            keyalgorithm=dns.tsig.HMAC_SHA256,
        )
        update.add(f"baseline-{i}", 60, "TXT", f'"v=spf1 ip4:192.0.2.{i % 250} ~all"')
        response = dns.query.tcp(update, knot.address, port=knot.port, timeout=5)
        if response.rcode() != 0:
            raise RuntimeError(f"baseline update refused: rcode {response.rcode()}")
    return BASELINE_UPDATES / (time.perf_counter() - started)


def published_if_verified(item: Mapping[str, Any]) -> int | None:
    """A DNSVerified domain's published records; None while it is not verified."""
    if not has_condition(item, "DNSVerified"):
        return None
    return sum(1 for r in (item.get("status") or {}).get("records") or [] if r.get("published"))


def run(stack: Stack, base: Path) -> None:
    with KnotServer(base / "bench-dns", zones={ZONE: minimal_zone(ZONE)}) as knot:
        baseline = baseline_updates_per_second(knot)

        api_client = api_client_for(stack.kubeconfig, connections=THREADS)
        core = client.CoreV1Api(api_client)
        api = client.CustomObjectsApi(api_client)
        core.create_namespace({"metadata": {"name": NAMESPACE}})
        secret = base64.b64encode(knot.tsig.secret.encode()).decode()
        core.create_namespaced_secret(
            NAMESPACE, {"metadata": {"name": "tsig"}, "data": {"secret": secret}}
        )

        log = (base / "bench-sendingdomain-operator.log").open("ab")
        operator = subprocess.Popen(
            list(OPERATOR_COMMAND),
            env={
                **os.environ,
                **stack.env(),
                "PM_METRICS_PORT": "0",
                "PM_RESYNC_SECONDS": "300",
                "PM_DNS_RESOLVER": f"{knot.address}:{knot.port}",
                "PM_DNS_NAMESERVER_PORT": str(knot.port),
                "PM_DNS_TTL_SECONDS": "60",
                "PM_DNS_TICK_SECONDS": "30",
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            tally = Tally(api, GROUP, VERSION, PLURAL, published_if_verified, namespace=NAMESPACE)
            started = time.perf_counter()
            with ThreadPoolExecutor(THREADS) as pool:
                list(
                    pool.map(
                        lambda i: api.create_namespaced_custom_object(
                            GROUP, VERSION, NAMESPACE, PLURAL, body(i, knot)
                        ),
                        range(COUNT),
                    )
                )
            # Followed by a watch, not polled: a list of every domain each second would take
            # the cores the operator is measured on.
            left = TIMEOUT_SECONDS - (time.perf_counter() - started)
            tally.wait(lambda verified: len(verified) >= COUNT, left)
            verified, records = len(tally.summaries), sum(tally.summaries.values())
            elapsed = time.perf_counter() - started
            rss = peak_rss_mib(operator.pid)
        finally:
            operator.terminate()
            try:
                operator.wait(timeout=60)
            except subprocess.TimeoutExpired:  # thousands of domains' handlers winding down
                operator.kill()
                operator.wait()
            log.close()

    # Every published record went out with its ownership marker: two RR additions each.
    rate = records * 2 / elapsed
    print("benchmark: sendingdomains")
    print(f"  baseline: dnspython, one UPDATE per record        {baseline:8.1f} updates/s")
    partial = "" if verified >= COUNT else " (out of time: PM_BENCH_DOMAINS_TIMEOUT)"
    print(
        f"  operator: {COUNT:,} SendingDomains -> {verified:,} DNSVerified {elapsed:8.2f} s"
        + partial
    )
    print(
        f"  operator: {records} records + {records} markers published "
        f"{rate:8.1f} RRs/s ({rate / baseline:.2f}x baseline)"
    )
    print(f"  operator peak RSS                                 {rss:8.1f} MiB")
    print(f"  machine load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
