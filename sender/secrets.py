"""Where the sender reads DKIM keys and relay credentials: Secrets of its tenant namespace.

In a pod, `KubeSecrets` reads them through the API: the sender's Roles name exactly the Secrets
it may get (its own, and per Campaign those the plan names; operator/campaign.py).
`DirSecrets` reads the same Secrets laid out as files, one folder per Secret with one file per
key (what a Secret volume mount looks like): used by the local stack and the tests, which run
the sender without a cluster.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Protocol

from penguinmails.common.dkim.keys import load_keys_from_secret, signing_keys
from penguinmails.common.dkim.signer import DkimSigner

__all__ = ["DirSecrets", "KubeSecrets", "SecretReader", "load_signer"]


class SecretReader(Protocol):
    async def read(self, name: str) -> dict[str, bytes]:
        """The decoded data of the Secret `name`; KeyError when there is none."""
        ...


class DirSecrets:
    def __init__(self, root: Path) -> None:
        self.root = root

    async def read(self, name: str) -> dict[str, bytes]:
        folder = self.root / name
        if not folder.is_dir():
            raise KeyError(f"no Secret {name} under {self.root}")
        return {
            path.name: path.read_bytes()
            for path in folder.iterdir()
            if path.is_file() and not path.name.startswith(".")
        }


class KubeSecrets:
    def __init__(self, namespace: str) -> None:
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        self.namespace = namespace
        self._api = client.CoreV1Api()

    async def read(self, name: str) -> dict[str, bytes]:
        from kubernetes.client.exceptions import ApiException

        try:
            secret = await asyncio.to_thread(self._api.read_namespaced_secret, name, self.namespace)
        except ApiException as error:
            if error.status == 404:
                raise KeyError(f"no Secret {name} in {self.namespace}") from None
            raise
        return {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}


async def load_signer(secrets: SecretReader, secret_name: str, domain: str) -> DkimSigner:
    """A signer with the domain's Active keys (RSA and Ed25519) from its DKIM Secret."""
    data = await secrets.read(secret_name)
    encoded = {key: base64.b64encode(value).decode() for key, value in data.items()}
    keys = signing_keys(load_keys_from_secret(encoded))
    if not keys:
        raise KeyError(f"Secret {secret_name} has no Active DKIM key for {domain}")
    return DkimSigner.from_dkim_keys(domain, keys)
