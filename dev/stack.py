"""The local stack `make run` and the tests share: control plane (and, if asked, a node),
PostgreSQL, Redis, CRDs.

`PM_KUBECONFIG` points everything at an existing cluster instead of the embedded control plane;
`PM_DATABASE_URL` and `PM_REDIS_URL` do the same for the databases.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient

from penguinmails.devstack.controlplane import ControlPlane

if TYPE_CHECKING:
    from penguinmails.devstack.node import Node

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
CRD_DIR = REPO_ROOT / "crds"
FIELD_MANAGER = "penguinmails-dev"
# The operator as a separate process (killable like in production), with no liveness endpoint:
# several may run one after another on one machine. Its environment comes from `Stack.env()`.
OPERATOR_COMMAND = (sys.executable, "-m", "penguinmails.operator", "--liveness", "")


def api_client_for(kubeconfig: Path, connections: int = 10) -> client.ApiClient:
    """An admin client; `connections` bounds the HTTP pool (one per concurrent thread)."""
    configuration = client.Configuration()
    configuration.connection_pool_maxsize = connections
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return client.ApiClient(configuration)


def load_documents(paths: list[Path]) -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for path in paths:
        documents.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return documents


def apply_documents(api: client.ApiClient, documents: list[dict[str, Any]]) -> None:
    """Server-side apply each document, as `kubectl apply --server-side` would."""
    dynamic = DynamicClient(api)
    for document in documents:
        resource = dynamic.resources.get(api_version=document["apiVersion"], kind=document["kind"])
        dynamic.server_side_apply(
            resource, body=document, field_manager=FIELD_MANAGER, force_conflicts=True
        )


def install_crds(api: client.ApiClient, timeout: float = 60.0) -> list[str]:
    """Apply crds/*.yaml and wait until the API server serves every kind.

    Established is not enough: until the API server's watch cache for a new CRD is ready it
    answers 429 "storage is (re)initializing", so each kind is also listed once successfully.
    """
    documents = load_documents(sorted(CRD_DIR.glob("*.yaml")))
    apply_documents(api, documents)
    extensions = client.ApiextensionsV1Api(api)
    custom = client.CustomObjectsApi(api)
    deadline = time.monotonic() + timeout
    for document in documents:
        name = document["metadata"]["name"]
        group, plural = document["spec"]["group"], document["spec"]["names"]["plural"]
        version = document["spec"]["versions"][0]["name"]
        while not _served(extensions, custom, name, group, version, plural):
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {name} is not served after {timeout:.0f}s")
            time.sleep(0.2)
    return [d["metadata"]["name"] for d in documents]


def _served(
    extensions: client.ApiextensionsV1Api,
    custom: client.CustomObjectsApi,
    name: str,
    group: str,
    version: str,
    plural: str,
) -> bool:
    crd = extensions.read_custom_resource_definition(name)
    conditions = {c.type: c.status for c in (crd.status.conditions or [])}
    if conditions.get("Established") != "True":
        return False
    try:
        custom.list_cluster_custom_object(group, version, plural, limit=1)
    except ApiException as error:
        if error.status in (404, 429):
            return False
        raise
    return True


@dataclass
class Stack:
    """Everything the operator needs, started in `base_dir` and stopped on exit."""

    base_dir: Path
    with_node: bool = False
    """Also start a node (dev/node.py) so pods really run; only with the embedded control plane."""
    kubeconfig: Path = field(init=False)
    database_url: str = field(init=False)
    redis_url: str = field(init=False)
    control_plane: ControlPlane | None = field(init=False, default=None)
    node: Node | None = field(init=False, default=None)
    timings: dict[str, float] = field(init=False, default_factory=dict)
    _exit: contextlib.ExitStack = field(init=False, default_factory=contextlib.ExitStack)

    def __enter__(self) -> Stack:
        try:
            self._start()
        except BaseException:
            self._exit.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._exit.close()

    def _start(self) -> None:
        from penguinmails.devstack.node import Node
        from penguinmails.devstack.postgres import PostgresServer
        from penguinmails.devstack.redis import RedisServer

        existing = os.environ.get("PM_KUBECONFIG")
        if existing:
            self.kubeconfig = Path(existing)
        else:
            plane = self._exit.enter_context(ControlPlane(self.base_dir / "kube"))
            self.control_plane = plane
            self.kubeconfig = plane.kubeconfig
            if plane.build_result is not None:
                self.timings["control plane build"] = plane.build_result.seconds
            self.timings["control plane start"] = plane.started_in

        self.database_url = os.environ.get("PM_DATABASE_URL", "")
        if not self.database_url:
            postgres = self._exit.enter_context(PostgresServer(self.base_dir / "postgres"))
            self.database_url = postgres.dsn
            self.timings["postgresql start"] = postgres.started_in
        self.redis_url = os.environ.get("PM_REDIS_URL", "")
        if not self.redis_url:
            redis = self._exit.enter_context(RedisServer(self.base_dir / "redis"))
            self.redis_url = redis.url
            self.timings["redis start"] = redis.started_in

        started = time.monotonic()
        with api_client_for(self.kubeconfig) as api:
            install_crds(api)
        self.timings["CRDs installed"] = time.monotonic() - started
        # Last: the controller-manager's quota controller must see the CRDs in its first
        # discovery (tenant quotas count SendingDomains), which a minute of node start delays.
        if self.with_node and self.control_plane is not None:
            self.node = self._exit.enter_context(Node(self.base_dir / "node", self.control_plane))
            self.timings.update({f"node: {k}": v for k, v in self.node.timings.items()})

    def env(self) -> dict[str, str]:
        """Environment for an operator process running against this stack."""
        return {
            "PM_KUBECONFIG": str(self.kubeconfig),
            "KUBECONFIG": str(self.kubeconfig),
            "PM_DATABASE_URL": self.database_url,
            "PM_REDIS_URL": self.redis_url,
            # The local DNS servers and relays are on loopback, which tenants may not use in
            # production (common/egress.py).
            "PM_EGRESS_ALLOW": "127.0.0.0/8",
            # Keep the repository's operator/ folder from shadowing the standard library.
            "PYTHONSAFEPATH": "1",
        }
