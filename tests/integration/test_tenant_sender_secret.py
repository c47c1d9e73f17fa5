"""Each tenant's sender gets the platform's connection settings through a Secret of its own."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.integration.conftest import GROUP, VERSION, OperatorFactory, wait_for

pytestmark = pytest.mark.integration

PLATFORM = "penguinmails-platform"
VALUES = {
    "PM_DATABASE_URL": "postgresql://sender@db.example:5432/penguinmails",
    "PM_REDIS_URL": "redis://redis.example:6379/0",
    "PM_SUPPRESSION_KEY": "s3cr3t-suppression-key",
}


def ready_condition(api: client.CustomObjectsApi, name: str) -> dict[str, Any]:
    obj = api.get_cluster_custom_object(GROUP, VERSION, "tenants", name)
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition["type"] == "Ready":
            return dict(condition)
    return {}


def test_sender_secret_is_copied_once_the_platform_secret_exists(
    operator_process: OperatorFactory,
    custom_objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
) -> None:
    try:
        core.create_namespace({"metadata": {"name": PLATFORM}})
    except ApiException as error:
        if error.status != 409:
            raise
    operator = operator_process(PM_SENDER_SECRET=f"{PLATFORM}/pm-sender")
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Tenant",
        "metadata": {"name": "wired"},
        "spec": {"tier": "starter", "contactEmail": "ops@wired.example.com"},
    }
    custom_objects.create_cluster_custom_object(GROUP, VERSION, "tenants", body)

    missing = wait_for(
        lambda: (
            ready_condition(custom_objects, "wired").get("reason") == "SenderSecretMissing"
            and ready_condition(custom_objects, "wired")
        ),
        what="Ready=False naming the missing platform Secret",
    )
    assert missing["status"] == "False"
    assert f"{PLATFORM}/pm-sender" in missing["message"]
    assert "PM_SUPPRESSION_KEY" in missing["message"]

    core.create_namespaced_secret(
        PLATFORM,
        {
            "metadata": {"name": "pm-sender"},
            "stringData": {**VALUES, "UNRELATED_KEY": "not for senders"},
        },
    )
    wait_for(
        lambda: ready_condition(custom_objects, "wired").get("status") == "True",
        timeout=60,
        what="Tenant Ready once the Secret exists",
    )
    copied = core.read_namespaced_secret("penguinmails-sender", "tenant-wired")
    decoded = {k: base64.b64decode(v).decode() for k, v in copied.data.items()}
    assert decoded == VALUES
    assert copied.metadata.owner_references[0].kind == "Tenant"

    status = str(custom_objects.get_cluster_custom_object(GROUP, VERSION, "tenants", "wired"))
    assert VALUES["PM_SUPPRESSION_KEY"] not in status
    assert VALUES["PM_SUPPRESSION_KEY"] not in operator.log()
    custom_objects.delete_cluster_custom_object(GROUP, VERSION, "tenants", "wired")
    operator.stop()
    operator.assert_no_errors()
