"""100 relay SmtpServers applied at once, reconciled and probed until Ready: time, probes/s.

Real probes: a Postfix with STARTTLS stands for the relays, Knot answers the PTR, A and
blocklist queries. Baselines, measured in the same run: the API server alone storing the same
100 objects (no operator), and the same 100 probes run directly, back to back, in this process.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from penguinmails.api.v1alpha1.smtpserver import SmtpServerSpec
from penguinmails.bench.watching import Tally, has_condition
from penguinmails.common.settings import SmtpServerSettings
from penguinmails.devstack.knot import KnotServer, minimal_zone
from penguinmails.devstack.postfix import PostfixServer
from penguinmails.devstack.stack import OPERATOR_COMMAND, Stack, api_client_for
from penguinmails.operator.smtpserver import run_probes

GROUP, VERSION, PLURAL = "penguinmails.io", "v1alpha1", "smtpservers"
NAMESPACE = "bench-smtp"
HOSTNAME = "mx.bench.test"
COUNT = 100
THREADS = 16


def body(name: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SmtpServer",
        "metadata": {"name": name},
        "spec": {
            "hostname": HOSTNAME,
            "provider": {"relay": {"host": "127.0.0.1", "port": port, "tls": "starttls"}},
        },
    }


def apply_all(api: client.CustomObjectsApi, names: list[str], port: int) -> None:
    with ThreadPoolExecutor(THREADS) as pool:
        list(
            pool.map(
                lambda n: api.create_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, PLURAL, body(n, port)
                ),
                names,
            )
        )


def delete_all(api: client.CustomObjectsApi, names: list[str]) -> None:
    with ThreadPoolExecutor(THREADS) as pool:
        list(
            pool.map(
                lambda n: api.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, n),
                names,
            )
        )


def ready_relay(item: Mapping[str, Any]) -> bool | None:
    """A bench SmtpServer (named relay-…) that is Ready; None for any other."""
    if item["metadata"]["name"].startswith("relay-") and has_condition(item, "Ready"):
        return True
    return None


def run(stack: Stack, base: Path) -> None:
    api_client = api_client_for(stack.kubeconfig, connections=THREADS)
    api = client.CustomObjectsApi(api_client)
    try:
        client.CoreV1Api(api_client).create_namespace({"metadata": {"name": NAMESPACE}})
    except ApiException as error:
        if error.status != 409:
            raise
    zones = {
        "bench.test": minimal_zone("bench.test", extra="mx IN A 127.0.0.1\n"),
        "0.0.127.in-addr.arpa": minimal_zone(
            "0.0.127.in-addr.arpa",
            nameservers=("ns1.bench.test.",),
            extra=f"1 IN PTR {HOSTNAME}.\n",
        ),
        "zen.bl.test": minimal_zone("zen.bl.test"),
    }
    with (
        KnotServer(base / "bench-smtp", zones=zones) as knot,
        # One Postfix stands for 100 relays: lift its per-client connection limits (anvil).
        PostfixServer(
            base / "bench-smtp",
            tls=True,
            hostname=HOSTNAME,
            settings={
                "smtpd_client_connection_count_limit": "0",
                "smtpd_client_connection_rate_limit": "0",
                "default_process_limit": "200",
            },
        ) as postfix,
    ):
        probe_env = {
            "PM_DNS_RESOLVER": f"{knot.address}:{knot.port}",
            "PM_DNSBL_ZONES": "zen.bl.test",
            "PM_DOMAIN_BLOCKLISTS": "zen.bl.test",
            "PM_SMTP_PROBE_TIMEOUT_SECONDS": "10",
        }
        # Baseline 1: the API server alone stores (and deletes) the same objects.
        baseline_names = [f"baseline-{i:03d}" for i in range(COUNT)]
        started = time.perf_counter()
        apply_all(api, baseline_names, postfix.port)
        store = time.perf_counter() - started
        delete_all(api, baseline_names)

        # Baseline 2: the same probes, run directly one after another.
        settings = replace(
            SmtpServerSettings.from_env(),
            dns_resolver=probe_env["PM_DNS_RESOLVER"],
            ip_blocklists=("zen.bl.test",),
            domain_blocklists=("zen.bl.test",),
            probe_timeout_seconds=10.0,
        )
        spec = SmtpServerSpec.model_validate(body("x", postfix.port)["spec"])

        async def probe_all() -> None:
            for _ in range(COUNT):
                await run_probes(settings, spec, "127.0.0.1")

        started = time.perf_counter()
        asyncio.run(probe_all())
        direct = time.perf_counter() - started

        log = (base / "bench-smtp-operator.log").open("ab")
        operator = subprocess.Popen(
            list(OPERATOR_COMMAND),
            env={
                **os.environ,
                **stack.env(),
                **probe_env,
                "PM_METRICS_PORT": "0",
                "PM_SMTP_POLL_SECONDS": "5",
                "PM_SMTP_PROBE_SECONDS": "30",
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            names = [f"relay-{i:03d}" for i in range(COUNT)]
            started = time.perf_counter()
            apply_all(api, names, postfix.port)
            ready = Tally(api, GROUP, VERSION, PLURAL, ready_relay, namespace=NAMESPACE)
            if not ready.wait(lambda relays: len(relays) >= COUNT, 600):
                raise TimeoutError(f"only {len(ready.summaries)}/{COUNT} Ready")
            elapsed = time.perf_counter() - started
        finally:
            operator.terminate()
            operator.wait(timeout=30)
            log.close()

    print("benchmark: smtpservers")
    print(f"  baseline: API server stores {COUNT} SmtpServers   {store:8.2f} s")
    print(
        f"  baseline: {COUNT} probes run directly           {direct:8.2f} s "
        f"({COUNT / direct:.1f} probes/s)"
    )
    print(
        f"  operator: {COUNT} applied -> probed, all Ready  {elapsed:8.2f} s "
        f"({COUNT / elapsed:.1f} probes/s; {elapsed / store:.1f}x store, "
        f"{elapsed / direct:.2f}x direct probes)"
    )
