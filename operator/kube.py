"""The operator's one way to write Kubernetes objects: server-side apply.

Server-side apply makes every reconcile idempotent and level-based: the operator states the whole
desired object, the API server merges it with what others own (replicas set by an autoscaler,
labels added by a platform team) and brings back anything deleted or edited behind our back.

The official client is synchronous; calls run in worker threads so the kopf event loop never blocks.
Every call has a connect and a read timeout (`KubeClientSettings`) and is retried with
exponential backoff: a hung connection fails instead of holding a worker thread forever, and the
reconcile that made it becomes a transient failure that kopf retries.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError
from urllib3.util.retry import Retry

from penguinmails.api.v1alpha1 import GROUP_VERSION
from penguinmails.common.settings import KubeClientSettings
from penguinmails.operator import metrics

FIELD_MANAGER = "penguinmails-operator"
# Calls run in worker threads (the client is synchronous): as many threads as HTTP connections,
# so hundreds of objects reconciled at once neither queue behind a few threads nor reconnect.
KUBE_WORKERS = 32

Manifest = Mapping[str, Any]


def controller_reference(kind: str, name: str, uid: str) -> dict[str, Any]:
    """A child's ownerReference to the penguinmails.io object that made it: garbage collection
    removes the child when its owner goes, even while the operator is down."""
    return {
        "apiVersion": GROUP_VERSION,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def client_configuration(settings: KubeClientSettings | None = None) -> client.Configuration:
    """In-cluster credentials when running in a pod, else PM_KUBECONFIG, else KUBECONFIG."""
    settings = settings or KubeClientSettings.from_env()
    configuration = client.Configuration()
    configuration.connection_pool_maxsize = KUBE_WORKERS
    # Every verb is retried: the operator's writes are server-side apply, merge patches and
    # deletes, all idempotent. Backoff 0.5 s, 1 s, 2 s ... between attempts.
    configuration.retries = Retry(
        total=settings.retries,
        backoff_factor=0.5,
        allowed_methods=None,
    )
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)
    else:
        path = os.environ.get("PM_KUBECONFIG") or os.environ.get("KUBECONFIG")
        config.load_kube_config(config_file=path, client_configuration=configuration)
    return configuration


class TimeoutApiClient(client.ApiClient):  # type: ignore[misc]
    """An ApiClient whose every call, discovery included, has a connect and a read timeout."""

    def __init__(self, configuration: client.Configuration, settings: KubeClientSettings) -> None:
        super().__init__(configuration)
        self.request_timeout = (settings.connect_timeout_seconds, settings.read_timeout_seconds)

    def call_api(self, *args: Any, _request_timeout: Any = None, **kwargs: Any) -> Any:
        return super().call_api(
            *args, _request_timeout=_request_timeout or self.request_timeout, **kwargs
        )


def load_config(settings: KubeClientSettings | None = None) -> client.ApiClient:
    settings = settings or KubeClientSettings.from_env()
    return TimeoutApiClient(client_configuration(settings), settings)


def authorization(configuration: client.Configuration) -> str | None:
    """The Authorization header's value (`Bearer <token>`), if the credentials have a token.
    Read at each use: in a pod the client re-reads a rotated service-account token here."""
    header = configuration.get_api_key_with_prefix(
        "BearerToken"
    ) or configuration.get_api_key_with_prefix("authorization")
    return str(header) if header else None


def connection_info() -> kopf.ConnectionInfo:
    """The same credentials for kopf's own API client, so both always talk to one cluster."""
    configuration = client_configuration()
    header = authorization(configuration)
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
        metrics.count_request("apply")
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
        metrics.count_request("get")
        return await asyncio.to_thread(self._get_sync, api_version, kind, name, namespace)

    def _list_sync(
        self, api_version: str, kind: str, namespace: str | None
    ) -> list[dict[str, Any]]:
        resource = self._resource(api_version, kind)
        return [dict(item.to_dict()) for item in resource.get(namespace=namespace).items]

    async def list(
        self, api_version: str, kind: str, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        metrics.count_request("list")
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
        metrics.count_request("delete")
        return await asyncio.to_thread(self._delete_sync, api_version, kind, name, namespace)

    def _merge_patch_sync(
        self, api_version: str, kind: str, name: str, patch: Manifest, namespace: str | None
    ) -> bool:
        resource = self._resource(api_version, kind)
        try:
            resource.patch(
                body=dict(patch),
                name=name,
                namespace=namespace,
                content_type="application/merge-patch+json",
            )
        except NotFoundError:
            return False
        return True

    async def merge_patch(
        self,
        api_version: str,
        kind: str,
        name: str,
        patch: Manifest,
        namespace: str | None = None,
    ) -> bool:
        """A JSON merge patch (for a field another writer also manages); False when gone."""
        metrics.count_request("patch")
        return await asyncio.to_thread(
            self._merge_patch_sync, api_version, kind, name, patch, namespace
        )

    def _patch_status_sync(
        self, api_version: str, plural: str, name: str, patch: Manifest, namespace: str | None
    ) -> dict[str, Any] | None:
        group, version = api_version.split("/", 1)
        api = client.CustomObjectsApi(self._dynamic.client)
        try:
            if namespace is None:
                stored = api.patch_cluster_custom_object_status(
                    group,
                    version,
                    plural,
                    name,
                    dict(patch),
                    _content_type="application/merge-patch+json",
                )
            else:
                stored = api.patch_namespaced_custom_object_status(
                    group,
                    version,
                    namespace,
                    plural,
                    name,
                    dict(patch),
                    _content_type="application/merge-patch+json",
                )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return dict(stored.get("status") or {})

    async def patch_status(
        self,
        api_version: str,
        plural: str,
        name: str,
        patch: Manifest,
        namespace: str | None = None,
    ) -> dict[str, Any] | None:
        """A JSON merge patch of a custom object's status subresource: the status as stored
        after it, or None when the object is gone."""
        metrics.count_request("patch")
        return await asyncio.to_thread(
            self._patch_status_sync, api_version, plural, name, patch, namespace
        )
