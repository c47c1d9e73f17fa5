"""The API's Kubernetes access: the tenant's custom resources, with the API's own identity.

In a pod the API runs as its own ServiceAccount (chart: templates/api.yaml), whose ClusterRole
allows only SendingDomain, Campaign and SmtpServer; outside a cluster, PM_KUBECONFIG. The
official client is synchronous: calls run in worker threads. Writes are not retried (a
create retried after a lost answer would report a conflict the client did not cause); reads
are, with a connect and read timeout on every call.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.util.retry import Retry

from penguinmails.api.v1alpha1 import API_GROUP, API_VERSION

from .errors import ApiError

__all__ = ["ClusterObjects", "CustomObjects", "api_client", "kube_error"]

_TIMEOUT = (10.0, 30.0)
_MERGE_PATCH = "application/merge-patch+json"


def _configuration(kubeconfig: str | None) -> client.Configuration:
    configuration = client.Configuration()
    configuration.connection_pool_maxsize = 16
    configuration.retries = Retry(total=3, backoff_factor=0.5, allowed_methods={"GET"})
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return configuration


def api_client(kubeconfig: str | None) -> client.ApiClient:
    """A client with the API's own identity (its ServiceAccount in a pod)."""
    return client.ApiClient(_configuration(kubeconfig))


def kube_error(error: ApiException, what: str) -> ApiError:
    """The API server's answer as the API's error: its message and the field it names."""
    try:
        status: dict[str, Any] = json.loads(error.body or "{}")
    except ValueError:
        status = {}
    reason = str(status.get("reason", ""))
    message = str(status.get("message", "")) or f"the cluster refused the request for {what}"
    causes = (status.get("details") or {}).get("causes") or []
    if error.status == 404:
        return ApiError.not_found(what)
    if error.status == 409 and reason == "AlreadyExists":
        return ApiError(
            409, "conflict_error", "resource_exists", f"{what} already exists.", param="name"
        )
    if error.status == 409:
        return ApiError(
            409,
            "conflict_error",
            "resource_conflict",
            f"{what} was changed concurrently: fetch it again and retry.",
        )
    if error.status in (400, 422):
        field = None
        if causes:
            field = str(causes[0].get("field", "")) or None
            message = str(causes[0].get("message", message))
        if field:
            # "spec.dkim.selectorPrefix" as the API server names it; drop the object's root.
            field = field.removeprefix("metadata.")
        return ApiError.invalid(f"{field + ': ' if field else ''}{message}", field)
    if error.status == 410:
        return ApiError.invalid(
            "The cursor has expired: start again from the first page.", "cursor", "cursor_expired"
        )
    if error.status == 403:
        # The API's own identity lacks a right: a deployment fault, not the caller's.
        return ApiError(500, "api_error", "cluster_forbidden", "The API is not allowed to do this.")
    return ApiError(
        502, "api_error", "cluster_unavailable", "The cluster did not answer: try again."
    )


class CustomObjects:
    """The penguinmails.io/v1alpha1 objects of one namespace at a time."""

    def __init__(self, kubeconfig: str | None) -> None:
        self._client = api_client(kubeconfig)
        self._api = client.CustomObjectsApi(self._client)

    def close(self) -> None:
        self._client.close()

    async def list(
        self, namespace: str, plural: str, *, limit: int, cont: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        kwargs: dict[str, Any] = {"limit": limit, "_request_timeout": _TIMEOUT}
        if cont:
            kwargs["_continue"] = cont
        result = await asyncio.to_thread(
            self._api.list_namespaced_custom_object,
            API_GROUP,
            API_VERSION,
            namespace,
            plural,
            **kwargs,
        )
        items = list(result.get("items") or [])
        return items, (result.get("metadata") or {}).get("continue") or None

    async def get(self, namespace: str, plural: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await asyncio.to_thread(
            self._api.get_namespaced_custom_object,
            API_GROUP,
            API_VERSION,
            namespace,
            plural,
            name,
            _request_timeout=_TIMEOUT,
        )
        return result

    async def create(self, namespace: str, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await asyncio.to_thread(
            self._api.create_namespaced_custom_object,
            API_GROUP,
            API_VERSION,
            namespace,
            plural,
            body,
            field_manager="penguinmails-api",
            _request_timeout=_TIMEOUT,
        )
        return result

    async def merge_patch(
        self, namespace: str, plural: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        """JSON merge patch; a `metadata.resourceVersion` in it makes the API server refuse
        (409) when the object has changed since, which is how If-Match is enforced."""

        result: dict[str, Any] = await asyncio.to_thread(
            self._api.patch_namespaced_custom_object,
            API_GROUP,
            API_VERSION,
            namespace,
            plural,
            name,
            patch,
            field_manager="penguinmails-api",
            _content_type=_MERGE_PATCH,
            _request_timeout=_TIMEOUT,
        )
        return result

    async def delete(
        self, namespace: str, plural: str, name: str, *, resource_version: str | None
    ) -> None:
        body = client.V1DeleteOptions(
            preconditions=client.V1Preconditions(resource_version=resource_version)
            if resource_version
            else None,
            propagation_policy="Background",
        )
        await asyncio.to_thread(
            self._api.delete_namespaced_custom_object,
            API_GROUP,
            API_VERSION,
            namespace,
            plural,
            name,
            body=body,
            _request_timeout=_TIMEOUT,
        )


class ClusterObjects:
    """The cluster-scoped penguinmails.io/v1alpha1 objects (Tenants), for platform
    administrators: a merge patch under a field manager of the caller's choosing, so GitOps
    tools see who owns which field (billing: `penguinmails-billing`, administrators:
    `penguinmails-admin`)."""

    def __init__(self, objects: CustomObjects) -> None:
        self._api = objects._api

    async def list(
        self, plural: str, *, limit: int, cont: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        kwargs: dict[str, Any] = {"limit": limit, "_request_timeout": _TIMEOUT}
        if cont:
            kwargs["_continue"] = cont
        result = await asyncio.to_thread(
            self._api.list_cluster_custom_object, API_GROUP, API_VERSION, plural, **kwargs
        )
        items = list(result.get("items") or [])
        return items, (result.get("metadata") or {}).get("continue") or None

    async def get(self, plural: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await asyncio.to_thread(
            self._api.get_cluster_custom_object,
            API_GROUP,
            API_VERSION,
            plural,
            name,
            _request_timeout=_TIMEOUT,
        )
        return result

    async def merge_patch(
        self, plural: str, name: str, patch: dict[str, Any], *, field_manager: str
    ) -> dict[str, Any]:
        result: dict[str, Any] = await asyncio.to_thread(
            self._api.patch_cluster_custom_object,
            API_GROUP,
            API_VERSION,
            plural,
            name,
            patch,
            field_manager=field_manager,
            _content_type=_MERGE_PATCH,
            _request_timeout=_TIMEOUT,
        )
        return result
