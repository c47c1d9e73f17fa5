"""Change latency with many Tenants: how soon a deleted sender Deployment or quota is back, and
how soon `penguinmails.io/rotate-dkim` starts a rotation, with the operator at its production
resync (60 s), so only the event paths can be this fast.

PM_BENCH_LATENCY_TENANTS Tenants (200 by default: 1,000 take ten minutes to be Ready on a
loaded 2-core machine; the issue's figure is at 1,000) are made Ready first and left idle; then
TRIES deletions, alternately of a random Tenant's sender Deployment and its quota, one at a time,
each timed from the DELETE answered to the recreated object (a new uid) readable; then
ROTATIONS SendingDomains (RFC 2136 to a local Knot) are annotated one at a time, each timed to
the first new key in its DKIM Secret.

Baselines, measured in the same run against the same API server: the same DELETE followed by
the bench itself creating the object again (the API server's own floor for a repair), and the
bench generating the same new keys (RSA-2048 and Ed25519) and writing them to a Secret.
"""

from __future__ import annotations

import base64
import functools
import os
import random
import secrets
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import urllib3
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from kubernetes import client
from kubernetes.client.rest import ApiException

from penguinmails.bench import sendingdomains, tenants
from penguinmails.bench.measure import peak_rss_mib
from penguinmails.bench.watching import Tally
from penguinmails.common.dkim.keys import load_keys_from_secret
from penguinmails.devstack.knot import KnotServer, minimal_zone
from penguinmails.devstack.stack import OPERATOR_COMMAND, Stack, api_client_for
from penguinmails.operator.sendingdomain import ROTATE_ANNOTATION
from penguinmails.operator.tenant_resources import SENDER_NAME

TENANTS = int(os.environ.get("PM_BENCH_LATENCY_TENANTS", "200"))
TRIES = 50
ROTATIONS = 20
RESYNC_SECONDS = 60  # production's: a repair sooner than this came from a watch
POLL_SECONDS = 0.02
QUOTA = "penguinmails-tier"
NAMESPACE = "bench-latency"


def _wait(read: Callable[[], Any], timeout: float = 120.0, every: float = POLL_SECONDS) -> float:
    """Seconds until `read()` returns something truthy (polled; a connection the loaded API
    server dropped is one more poll)."""
    started = time.perf_counter()
    while True:
        try:
            if read():
                return time.perf_counter() - started
        except urllib3.exceptions.HTTPError:
            pass
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"not there after {timeout:.0f} s")
        time.sleep(every)


def _uid_other_than(read: Callable[[], Any], old: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return bool(read().metadata.uid != old)
        except ApiException as error:
            if error.status == 404:
                return False
            raise

    return check


def _p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20, method="inclusive")[18]


class Child:
    """A Tenant child the bench deletes: the sender Deployment or the quota."""

    def __init__(self, core: client.CoreV1Api, apps: client.AppsV1Api, deployment: bool) -> None:
        self.core, self.apps, self.deployment = core, apps, deployment

    def read(self, namespace: str) -> Any:
        if self.deployment:
            return self.apps.read_namespaced_deployment(SENDER_NAME, namespace)
        return self.core.read_namespaced_resource_quota(QUOTA, namespace)

    def delete(self, namespace: str) -> None:
        if self.deployment:
            self.apps.delete_namespaced_deployment(SENDER_NAME, namespace)
        else:
            self.core.delete_namespaced_resource_quota(QUOTA, namespace)

    def create(self, namespace: str, body: dict[str, Any]) -> None:
        if self.deployment:
            self.apps.create_namespaced_deployment(namespace, body)
        else:
            self.core.create_namespaced_resource_quota(namespace, body)


def repairs(
    core: client.CoreV1Api, apps: client.AppsV1Api, names: list[str], *, by_operator: bool
) -> list[float]:
    """TRIES deletions of a sender Deployment or quota, each timed until a new one exists:
    recreated by the operator, or (the baseline) by the bench right after its DELETE."""
    rng = random.Random(8)  # noqa: S311 (which Tenants: not a secret)
    times = []
    for i in range(TRIES):
        namespace = f"tenant-{rng.choice(names)}"
        child = Child(core, apps, deployment=bool(i % 2))
        old = child.read(namespace)
        child.delete(namespace)
        started = time.perf_counter()
        if not by_operator:
            body = core.api_client.sanitize_for_serialization(old)
            metadata = body["metadata"]
            body["metadata"] = {k: metadata[k] for k in ("name", "labels") if k in metadata}
            body.pop("status", None)
            child.create(namespace, body)
        _wait(_uid_other_than(functools.partial(child.read, namespace), old.metadata.uid))
        times.append(time.perf_counter() - started)
    return times


def _new_keys(core: client.CoreV1Api, name: str, before: set[str]) -> Callable[[], bool]:
    def check() -> bool:
        data = core.read_namespaced_secret(f"{name}-dkim", NAMESPACE).data
        return bool({key.selector for key in load_keys_from_secret(data)} - before)

    return check


def _selectors(core: client.CoreV1Api, name: str) -> set[str]:
    data = core.read_namespaced_secret(f"{name}-dkim", NAMESPACE).data
    return {key.selector for key in load_keys_from_secret(data)}


def rotations(core: client.CoreV1Api, api: client.CustomObjectsApi) -> list[float]:
    times = []
    for i in range(ROTATIONS):
        name = f"d-{i:04d}"
        before = _selectors(core, name)
        api.patch_namespaced_custom_object(
            sendingdomains.GROUP,
            sendingdomains.VERSION,
            NAMESPACE,
            sendingdomains.PLURAL,
            name,
            {"metadata": {"annotations": {ROTATE_ANNOTATION: secrets.token_hex(4)}}},
        )
        times.append(_wait(_new_keys(core, name, before)))
    return times


def bare_rotations(core: client.CoreV1Api) -> list[float]:
    """Generate an RSA-2048 and an Ed25519 key and write them to a Secret: the work a rotation
    cannot avoid."""
    times = []
    for i in range(ROTATIONS):
        started = time.perf_counter()
        pems: dict[str, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey] = {
            "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "ed25519": ed25519.Ed25519PrivateKey.generate(),
        }
        data = {
            name: base64.b64encode(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            ).decode()
            for name, key in pems.items()
        }
        core.create_namespaced_secret(
            NAMESPACE, {"metadata": {"name": f"bare-rotation-{i}"}, "data": data}
        )
        times.append(time.perf_counter() - started)
    return times


def rotation_timings(log: str) -> list[str]:
    """The operator's own account of each rotation (`… stored (read …, generated …, written
    …)`, and before it how long the change waited for the domain's lock and a slot when it
    did), so that a slow try can be told from a slow pass start: the bench's directory, the
    operator's log with it, is gone after the run."""
    return [
        line.split("SendingDomain ", 1)[1]
        for line in log.splitlines()
        if "SendingDomain " in line
        and ((": rotation (" in line and " stored (" in line) or ": change waited " in line)
    ]


def _ready_domains(api: client.CustomObjectsApi) -> int:
    items = api.list_namespaced_custom_object(
        sendingdomains.GROUP, sendingdomains.VERSION, NAMESPACE, sendingdomains.PLURAL
    )["items"]
    return sum(
        1
        for item in items
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (item.get("status") or {}).get("conditions") or []
        )
    )


def run(stack: Stack, base: Path) -> None:
    zone = sendingdomains.ZONE
    with KnotServer(base / "bench-dns", zones={zone: minimal_zone(zone)}) as knot:
        api_client = api_client_for(stack.kubeconfig, connections=tenants.THREADS)
        api = client.CustomObjectsApi(api_client)
        core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
        core.create_namespace({"metadata": {"name": NAMESPACE}})
        secret = base64.b64encode(knot.tsig.secret.encode()).decode()
        core.create_namespaced_secret(
            NAMESPACE, {"metadata": {"name": "tsig"}, "data": {"secret": secret}}
        )
        log = (base / "bench-latency-operator.log").open("ab")
        operator = subprocess.Popen(
            list(OPERATOR_COMMAND),
            env={
                **os.environ,
                **stack.env(),
                "PM_METRICS_PORT": "0",
                "PM_RESYNC_SECONDS": str(RESYNC_SECONDS),
                "PM_DNS_RESOLVER": f"{knot.address}:{knot.port}",
                "PM_DNS_NAMESERVER_PORT": str(knot.port),
                "PM_DNS_TTL_SECONDS": "60",
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            names = [f"t-{i:05d}" for i in range(TENANTS)]
            started = time.perf_counter()
            tenants.create_all(api, names)
            tally = Tally(api, tenants.GROUP, tenants.VERSION, tenants.PLURAL, tenants.ready_tenant)
            tenants.wait_ready(tally, TENANTS, timeout=7200)
            ready = time.perf_counter() - started
            for i in range(ROTATIONS):
                body = sendingdomains.body(i, knot)
                del body["spec"]["verifyInterval"]  # the default, 10 minutes
                api.create_namespaced_custom_object(
                    sendingdomains.GROUP,
                    sendingdomains.VERSION,
                    NAMESPACE,
                    sendingdomains.PLURAL,
                    body,
                )
            _wait(lambda: _ready_domains(api) >= ROTATIONS, timeout=1800, every=2.0)
            time.sleep(10)  # the creation's echoes (status writes, watch events) settle

            baseline = repairs(core, apps, names, by_operator=False)
            repaired = repairs(core, apps, names, by_operator=True)
            bare = bare_rotations(core)
            rotated = rotations(core, api)
            rss = peak_rss_mib(operator.pid)
        finally:
            operator.terminate()
            try:
                operator.wait(timeout=60)
            except subprocess.TimeoutExpired:
                operator.kill()
                operator.wait()
            log.close()
        timings = rotation_timings(
            (base / "bench-latency-operator.log").read_text(errors="replace")
        )

    print(
        f"benchmark: latency ({TENANTS} Tenants Ready in {ready:.0f} s, resync {RESYNC_SECONDS} s)"
    )
    for label, samples in (
        (f"baseline: DELETE + bench re-creates, {TRIES} tries", baseline),
        (f"operator: deleted Deployment/quota back, {TRIES} tries", repaired),
        (f"baseline: generate keys + write Secret, {ROTATIONS} tries", bare),
        (f"operator: rotate-dkim -> new key, {ROTATIONS} tries", rotated),
    ):
        print(
            f"  {label:55} median {statistics.median(samples):6.2f} s  "
            f"p95 {_p95(samples):6.2f} s  max {max(samples):6.2f} s"
        )
    print(f"  operator peak RSS                                       {rss:8.1f} MiB")
    print(f"  machine load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("  inside the operator's pass, each rotation:")
    for line in timings:
        print(f"    {line}")
