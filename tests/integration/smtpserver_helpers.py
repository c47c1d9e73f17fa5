"""Shared by the SmtpServer integration tests: objects, secrets, waiting on conditions."""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from kubernetes import client
from kubernetes.client.rest import ApiException

from penguinmails.devstack.sshd import SshServer
from tests.integration.conftest import GROUP, VERSION, wait_for

PLURAL = "smtpservers"


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pm-smtp-") as path:
        yield Path(path)


@pytest.fixture(scope="module")
def ssh_key() -> ed25519.Ed25519PrivateKey:
    """The operator's SSH key to the "VPS" (its Secret is the module's to write)."""
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def vps(workdir: Path, ssh_key: ed25519.Ed25519PrivateKey) -> Iterator[SshServer]:
    """The "VPS": a real OpenSSH server on loopback that accepts `ssh_key`."""
    public = ssh_key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    with SshServer(workdir, authorized_keys=[public.decode()]) as server:
        yield server


def ssh_private_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()


def ensure_namespace(core: client.CoreV1Api, name: str) -> None:
    try:
        core.create_namespace({"metadata": {"name": name}})
    except ApiException as error:
        if error.status != 409:
            raise


def put_secret(core: client.CoreV1Api, namespace: str, name: str, data: dict[str, str]) -> None:
    body = {
        "metadata": {"name": name},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }
    try:
        core.create_namespaced_secret(namespace, body)
    except ApiException as error:
        if error.status != 409:
            raise
        core.replace_namespaced_secret(name, namespace, body)


def hostwinds_body(name: str, hostname: str, **overrides: Any) -> dict[str, Any]:
    provider = {
        "locationId": 1,
        "planId": 100,
        "template": "debian-12",
        "apiKeySecretRef": {"name": "hostwinds", "key": "apiKey"},
        "sshKeySecretRef": {"name": "vps-ssh", "key": "id_ed25519"},
        **overrides,
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SmtpServer",
        "metadata": {"name": name},
        "spec": {"hostname": hostname, "provider": {"hostwinds": provider}},
    }


def get(api: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return dict(api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for item in ((obj or {}).get("status") or {}).get("conditions") or []:
        if item["type"] == type_:
            return dict(item)
    return {}


def wait_condition(
    api: client.CustomObjectsApi,
    namespace: str,
    name: str,
    type_: str,
    status: str,
    *,
    reason: str | None = None,
    timeout: float = 60,
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = get(api, namespace, name)
        found = condition(obj, type_)
        if found.get("status") == status and (reason is None or found.get("reason") == reason):
            return obj
        return None

    what = f"{namespace}/{name} {type_}={status}" + (f" ({reason})" if reason else "")
    return dict(wait_for(check, timeout=timeout, what=what))


def delete_and_wait_gone(
    api: client.CustomObjectsApi, namespace: str, name: str, timeout: float = 60
) -> None:
    api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    wait_for(lambda: get(api, namespace, name) is None, timeout=timeout, what=f"{name} deleted")
