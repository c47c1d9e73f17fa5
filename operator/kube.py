"""The operator's one way to write Kubernetes objects: server-side apply.

Server-side apply makes every reconcile idempotent and level-based: the operator states the whole
desired object, the API server merges it with what others own (replicas set by an autoscaler,
labels added by a platform team) and brings back anything deleted or edited behind our back.

The official client is synchronous; calls run in worker threads so the kopf event loop never blocks.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

FIELD_MANAGER = "penguinmails-operator"
# Calls run in worker threads (the client is synchronous): as many threads as HTTP connections,
# so hundreds of objects reconciled at once neither queue behind a few threads nor reconnect.
KUBE_WORKERS = 32

Manifest = Mapping[str, Any]


def client_configuration() -> client.Configuration:
    """In-cluster credentials when running in a pod, else PM_KUBECONFIG, else KUBECONFIG."""
    configuration = client.Configuration()
    configuration.connection_pool_maxsize = KUBE_WORKERS
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)
    else:
        path = os.environ.get("PM_KUBECONFIG") or os.environ.get("KUBECONFIG")
        config.load_kube_config(config_file=path, client_configuration=configuration)
    return configuration


def load_config() -> client.ApiClient:
    return client.ApiClient(client_configuration())


def connection_info() -> kopf.ConnectionInfo:
    """The same credentials for kopf's own API client, so both always talk to one cluster."""
    configuration = client_configuration()
    header = configuration.get_api_key_with_prefix(
        "BearerToken"
    ) or configuration.get_api_key_with_prefix("authorization")
    scheme, _, token = (header or "").rpartition(" ")
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


class Kube:
    """Apply, read and delete objects by apiVersion/kind, resolved through API discovery."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._dynamic = DynamicClient(api_client)

    def _resource(self, api_version: str, kind: str) -> Any:
        return self._dynamic.resources.get(api_version=api_version, kind=kind)

    def _apply_sync(self, manifest: Manifest) -> dict[str, Any]:
        resource = self._resource(manifest["apiVersion"], manifest["kind"])
        result = self._dynamic.server_side_apply(
            resource,
            body=dict(manifest),
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )
        return dict(result.to_dict())

    async def apply(self, manifest: Manifest) -> dict[str, Any]:
        return await asyncio.to_thread(self._apply_sync, manifest)

    def _get_sync(
        self, api_version: str, kind: str, name: str, namespace: str | None
    ) -> dict[str, Any] | None:
        resource = self._resource(api_version, kind)
        try:
            return dict(resource.get(name=name, namespace=namespace).to_dict())
        except NotFoundError:
            return None

    async def get(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        return await asyncio.to_thread(self._get_sync, api_version, kind, name, namespace)

    def _list_sync(
        self, api_version: str, kind: str, namespace: str | None
    ) -> list[dict[str, Any]]:
        resource = self._resource(api_version, kind)
        return [dict(item.to_dict()) for item in resource.get(namespace=namespace).items]

    async def list(
        self, api_version: str, kind: str, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._list_sync, api_version, kind, namespace)

    def _delete_sync(self, api_version: str, kind: str, name: str, namespace: str | None) -> bool:
        resource = self._resource(api_version, kind)
        try:
            resource.delete(name=name, namespace=namespace, propagation_policy="Background")
        except NotFoundError:
            return False
        return True

    async def delete(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> bool:
        """Request deletion; False when the object was already gone."""
        return await asyncio.to_thread(self._delete_sync, api_version, kind, name, namespace)
