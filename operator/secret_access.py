"""Writing Secrets in a tenant's namespace, and nowhere else.

The operator's ClusterRole cannot create Secrets. Under the Helm chart it may instead `bind` one
ClusterRole, `<release>-secret-writer` (secrets create and patch), and it binds it to itself with
a RoleBinding in the tenant namespace it needs to write in, right before the write. Outside the
chart (the local stack, tests with an admin identity) the two variables are unset and Secrets are
written directly.

    await apply_secret(ctx.kube, manifest)     # any Secret the operator owns in a tenant namespace
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

from kubernetes.client.rest import ApiException

from penguinmails.operator.kube import Kube
from penguinmails.operator.tenant_resources import TENANT_LABEL

ROLE_ENV = "PM_SECRET_WRITER_CLUSTERROLE"
ACCOUNT_ENV = "PM_OPERATOR_SERVICE_ACCOUNT"
BINDING_NAME = "penguinmails-operator-secret-writer"
# A new RoleBinding takes effect when the API server's RBAC cache sees it, usually within a
# fraction of a second: retry a refused write for this long before reporting it.
PROPAGATION_SECONDS = 5.0


class NotATenantNamespaceError(Exception):
    """The operator writes Secrets only in tenant namespaces."""


def secret_writer_binding(namespace: str) -> dict[str, Any] | None:
    """The RoleBinding to apply in `namespace`, or None when not running under the chart."""
    role = os.environ.get(ROLE_ENV, "")
    account = os.environ.get(ACCOUNT_ENV, "")
    account_namespace, _, account_name = account.partition("/")
    if not role or not account_namespace or not account_name:
        return None
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": BINDING_NAME,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "penguinmails"},
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [
            {"kind": "ServiceAccount", "name": account_name, "namespace": account_namespace}
        ],
    }


async def ensure_secret_writer(kube: Kube, namespace: str) -> bool:
    """Bind the secret-writer role in a tenant namespace; False when not configured."""
    binding = secret_writer_binding(namespace)
    if binding is None:
        return False
    found = await kube.get("v1", "Namespace", namespace)
    labels = ((found or {}).get("metadata") or {}).get("labels") or {}
    if TENANT_LABEL not in labels:
        raise NotATenantNamespaceError(
            f"namespace {namespace} is not a tenant's namespace (no {TENANT_LABEL} label): "
            "create the object in tenant-<name>"
        )
    await kube.apply(binding)
    return True


async def apply_secret(kube: Kube, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Server-side apply a Secret in a tenant namespace, binding write access first if needed."""
    bound = await ensure_secret_writer(kube, str(manifest["metadata"]["namespace"]))
    deadline = asyncio.get_running_loop().time() + PROPAGATION_SECONDS
    while True:
        try:
            return await kube.apply(manifest)
        except ApiException as error:
            if not bound or error.status != 403 or asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(0.2)
