"""The chart installed into the local cluster by helm, as a platform team would install it.

`LocalRelease(...).start()` creates the release namespace and the two Secrets the chart reads
(`database.secretName`: the PostgreSQL URL; `sender.secretName`: the URLs the senders reach and
the suppression key), then `helm install --wait` with the locally built image (dev/images.py,
imported into the node, never pulled) and the values only a local install needs (values.yaml
documents every one); it returns once the operator's Deployment is available. `stop()`
uninstalls the release and deletes the namespace.

Every URL given here is as pods reach it: services on loopback are exposed on the node's bridge
(`Node.expose`, dev/forward.py) and `pod_url` swaps the host.
"""

from __future__ import annotations

import base64
import os
import subprocess
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from penguinmails.devstack import images
from penguinmails.devstack.helm import CHART_DIR, build_helm
from penguinmails.devstack.process import Startable
from penguinmails.devstack.stack import api_client_for

RELEASE = "penguinmails"
DATABASE_SECRET = "penguinmails-database"  # noqa: S105 - a Secret's name
SENDER_SECRET = "penguinmails-sender"  # noqa: S105 - a Secret's name


class ReleaseError(RuntimeError):
    """helm failed; the message quotes its output."""


def pod_url(url: str, host: str) -> str:
    """`url` with its host replaced by `host` (the bridge address a local service is exposed
    on), keeping scheme, login, port, path and query."""
    parts = urllib.parse.urlsplit(url)
    login = parts.netloc.rpartition("@")[0]
    netloc = f"{login}@{host}" if login else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


@dataclass
class LocalRelease(Startable):
    """The chart in `namespace`; see the module docstring. `env` is extra operator environment
    (`operator.extraEnv`), `values` overrides the local values."""

    base_dir: Path
    kubeconfig: Path
    namespace: str
    database_url: str
    redis_url: str
    suppression_key: str
    egress_allow: list[str]
    env: Mapping[str, str] = field(default_factory=dict)
    values: Mapping[str, Any] = field(default_factory=dict)
    timeout: float = 300.0
    installed_in: float = field(init=False, default=0.0)
    _installed: bool = field(init=False, default=False)

    @property
    def helm_env(self) -> dict[str, str]:
        """A private helm home (no user repositories, plugins or logins), our cluster only."""
        home = self.base_dir / "helm-home"
        env = {k: v for k, v in os.environ.items() if not k.startswith("HELM_")}
        return env | {
            "KUBECONFIG": str(self.kubeconfig),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def local_values(self) -> dict[str, Any]:
        repository, _, tag = images.IMAGE_NAME.rpartition(":")
        values: dict[str, Any] = {
            # The image the node imported; a pull would fail (no registry is reachable).
            "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
            # One node and two cores: one replica (still elected on its Lease).
            "replicas": 1,
            "podDisruptionBudget": {"enabled": False},
            "database": {"secretName": DATABASE_SECRET, "secretKey": "url"},
            "sender": {"secretName": SENDER_SECRET},
            # The relay and DNS server tenants use live on the bridge: a private network.
            "tenantEgress": {"allowCidrs": list(self.egress_allow)},
            "operator": {"extraEnv": [{"name": k, "value": v} for k, v in self.env.items()]},
        }
        return merge_values(values, dict(self.values))

    def start(self) -> LocalRelease:
        started = time.monotonic()
        try:
            self._create_secrets()
            self.base_dir.mkdir(parents=True, exist_ok=True)
            values = self.base_dir / "values.yaml"
            values.write_text(yaml.safe_dump(self.local_values()))
            self._installed = True
            self.helm(
                "install", RELEASE, str(CHART_DIR), "--namespace", self.namespace,
                "--values", str(values), "--wait", "--timeout", f"{self.timeout:.0f}s",
            )  # fmt: skip
        except BaseException:
            self.stop()
            raise
        self.installed_in = time.monotonic() - started
        return self

    def helm(self, *args: str) -> str:
        result = subprocess.run(
            [str(build_helm()), *args],
            env=self.helm_env,
            capture_output=True,
            text=True,
            timeout=self.timeout + 60,
            check=False,
        )
        if result.returncode != 0:
            raise ReleaseError(f"helm {args[0]} failed: {(result.stderr or result.stdout)[-2000:]}")
        return result.stdout

    def _create_secrets(self) -> None:
        secrets = {
            DATABASE_SECRET: {"url": self.database_url},
            SENDER_SECRET: {
                "PM_DATABASE_URL": self.database_url,
                "PM_REDIS_URL": self.redis_url,
                "PM_SUPPRESSION_KEY": self.suppression_key,
            },
        }
        with api_client_for(self.kubeconfig, connections=1) as api:
            core = client.CoreV1Api(api)
            try:
                core.create_namespace({"metadata": {"name": self.namespace}})
            except ApiException as error:
                if error.status != 409:
                    raise
            for name, data in secrets.items():
                body = {
                    "metadata": {"name": name},
                    "data": {k: _b64(v) for k, v in data.items()},
                }
                core.create_namespaced_secret(self.namespace, body)

    def stop(self) -> None:
        """Uninstall (waiting for the operator's pods to go) and delete the namespace."""
        if self._installed:
            self._installed = False
            self.helm("uninstall", RELEASE, "--namespace", self.namespace, "--wait")
        with api_client_for(self.kubeconfig, connections=1) as api:
            try:
                client.CoreV1Api(api).delete_namespace(self.namespace)
            except ApiException as error:
                if error.status != 404:
                    raise


def merge_values(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = value
    return merged
