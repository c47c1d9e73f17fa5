"""Fixtures for tests against the real local stack: control plane, CRDs, the operator process.

The control plane is built from the upstream modules (cached) and started once per session;
`PM_KUBECONFIG` runs the same tests against an existing cluster instead.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from penguinmails.common.egress import ALLOW_ENV
from penguinmails.devstack.controlplane import ControlPlane, build
from penguinmails.devstack.node import Node
from penguinmails.devstack.stack import OPERATOR_COMMAND, api_client_for, install_crds

GROUP, VERSION = "penguinmails.io", "v1alpha1"


@dataclass(frozen=True)
class Cluster:
    kubeconfig: Path
    server: str
    ca_file: Path | None
    bin_dir: Path
    plane: ControlPlane | None = None
    """The embedded control plane (None for an existing cluster named by PM_KUBECONFIG)."""

    @property
    def kubectl(self) -> Path:
        return self.bin_dir / "kubectl"


@pytest.fixture(autouse=True)
def loopback_relays_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test server is on loopback, which tenants may not use in production: the sender
    processes started here inherit this (the operator gets the same from `operator_process`)."""
    monkeypatch.setenv(ALLOW_ENV, os.environ.get(ALLOW_ENV) or "127.0.0.0/8,::1/128")


@pytest.fixture(scope="module")
def api_env() -> dict[str, str]:
    """Settings a module's customer API (api_stack.api_server) runs with beyond the stack's:
    a module overrides it, e.g. with the platform key ring or a Redis database of its own."""
    return {}


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    existing = os.environ.get("PM_KUBECONFIG")
    if existing:
        with api_client_for(Path(existing)) as api:
            server = str(api.configuration.host)
        yield Cluster(Path(existing), server, None, build().bin_dir)
        return
    with ControlPlane(tmp_path_factory.mktemp("kube")) as plane:
        assert plane.build_result is not None
        yield Cluster(
            plane.kubeconfig, plane.server, plane.ca_file, plane.build_result.bin_dir, plane
        )


@pytest.fixture(scope="session")
def node(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[Node]:
    """A real node (kubelet, containerd, kube-proxy) with the local images; only the tests that
    run pods ask for it, so the others never pay for the images or the node's start."""
    if cluster.plane is None:
        pytest.skip("PM_KUBECONFIG names an existing cluster: it brings its own nodes")
    with Node(tmp_path_factory.mktemp("node"), cluster.plane) as started:
        # Shown even with output captured, so CI logs carry the phase times.
        capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in started.timings.items())
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            print(f"\nnode {started.name} ready: {phases}", flush=True)
        yield started


@pytest.fixture(scope="session")
def api_client(cluster: Cluster) -> Iterator[client.ApiClient]:
    with api_client_for(cluster.kubeconfig) as api:
        yield api


@pytest.fixture(scope="session")
def crds_installed(api_client: client.ApiClient) -> list[str]:
    return install_crds(api_client)


@pytest.fixture(scope="session")
def custom_objects(
    api_client: client.ApiClient, crds_installed: list[str]
) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


@pytest.fixture(scope="session")
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture(scope="session")
def apps(api_client: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api_client)


@dataclass
class OperatorProcess:
    """The operator as it runs in production: a separate process, killable at any moment."""

    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None)

    def start(self) -> OperatorProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup, no finalizer handling — as when a node dies."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def assert_no_errors(self) -> None:
        """Nothing crashed: no traceback, no handler failing with an unexpected exception.

        Expected transient failures (kopf.TemporaryError, logged by kopf as "failed temporarily")
        are the designed retry path and are allowed; objects left by other test modules in the
        shared cluster can cause them.
        """
        text = self.log()
        for marker in ("Traceback", "Unhandled", "failed with an exception", "failed permanently"):
            assert marker not in text, f"operator log has {marker!r}:\n{text[-4000:]}"


OperatorFactory = Callable[..., OperatorProcess]


@pytest.fixture(scope="session")
def operator_process(
    cluster: Cluster,
    crds_installed: list[str],
    postgres_dsn: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorFactory]:
    """Start operators, one at a time: starting one stops the others (two standalone operators
    would fight over the same objects); every one is stopped at the end of the session."""
    started: list[OperatorProcess] = []
    logs = tmp_path_factory.mktemp("operator-logs")

    def start(kubeconfig: Path | None = None, **extra_env: str) -> OperatorProcess:
        for previous in started:
            previous.stop()
        env = {
            **os.environ,
            "PM_KUBECONFIG": str(kubeconfig or cluster.kubeconfig),
            "PM_DATABASE_URL": postgres_dsn,
            "PM_METRICS_PORT": "0",
            "PM_RESYNC_SECONDS": "3",
            # Every test server is on loopback, which tenants may not use in production.
            "PM_EGRESS_ALLOW": "127.0.0.0/8",
            **extra_env,
        }
        env.pop("KUBERNETES_SERVICE_HOST", None)
        handle = OperatorProcess(
            list(OPERATOR_COMMAND),
            env,
            logs / f"operator-{len(started)}.log",
        ).start()
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.stop()


_NAMESPACE_IN_LINE = re.compile(r'namespaces?(?:/| "| )([a-z0-9][-a-z0-9]*)')
_REFUSALS = ("Forbidden", "forbidden", "Not enough permissions")


def refusals(log: str, namespace: str) -> list[str]:
    """Lines of an operator log where the API server refused it something concerning
    `namespace` or the cluster scope.

    The cluster is shared by every module: an object another module left in a namespace that
    is no longer a tenant's is rightly refused to the chart's identity (the admission
    policy, the secret-writer bindings, a terminating namespace), which is not what a test of
    one Tenant's reconcile is about."""
    found = []
    for line in log.splitlines():
        if not any(marker in line for marker in _REFUSALS):
            continue
        others = {
            name
            for name in _NAMESPACE_IN_LINE.findall(line)
            if name != namespace and name.startswith("tenant-")
        }
        if not others:
            found.append(line)
    return found


def wait_for(
    predicate: Callable[[], Any], *, timeout: float = 60.0, interval: float = 0.25, what: str = ""
) -> Any:
    """Poll until predicate() returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what or predicate}: {last!r}"
    )
