"""MailU in the cluster: manifests applied to the real API server, owned by the SmtpServer."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from penguinmails.operator.mailu.render import MAILU_VERSION
from tests.integration.conftest import GROUP, VERSION, OperatorFactory, wait_for
from tests.integration.smtpserver_helpers import (
    PLURAL,
    condition,
    delete_and_wait_gone,
    ensure_namespace,
    wait_condition,
)

pytestmark = pytest.mark.integration

NS = "smtp-incluster"
NAME = "mx-cluster"


def body() -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SmtpServer",
        "metadata": {"name": NAME},
        "spec": {
            "hostname": "mx.cluster.example.com",
            "provider": {"mailuInCluster": {"replicas": 2, "storageSize": "1Gi"}},
        },
    }


def test_mailu_in_cluster_is_applied_owned_and_exposed_with_local_traffic_policy(
    operator_process: OperatorFactory,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    custom_objects: client.CustomObjectsApi,
) -> None:
    ensure_namespace(core, NS)
    operator = operator_process(PM_SMTP_POLL_SECONDS="0.5", PM_SMTP_PROBE_SECONDS="0")
    try:
        custom_objects.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body())
        obj = wait_condition(
            custom_objects, NS, NAME, "Provisioned", "False", reason="Provisioning"
        )
        uid = obj["metadata"]["uid"]
        deployments = {d.metadata.name: d for d in apps.list_namespaced_deployment(NS).items}
        assert set(deployments) == {
            f"{NAME}-mailu-{c}" for c in ("front", "admin", "smtp", "imap", "antispam", "redis")
        }
        for deployment in deployments.values():
            (owner,) = deployment.metadata.owner_references
            assert owner.uid == uid and owner.kind == "SmtpServer" and owner.controller
            image = deployment.spec.template.spec.containers[0].image
            assert image.endswith(f":{MAILU_VERSION}") or image.startswith("redis:7")
        assert deployments[f"{NAME}-mailu-front"].spec.replicas == 2
        assert deployments[f"{NAME}-mailu-imap"].spec.replicas == 1  # Dovecot never scales out
        assert deployments[f"{NAME}-mailu-smtp"].spec.replicas == 1  # one queue, one writer
        public = core.read_namespaced_service(f"{NAME}-mailu-public", NS)
        assert public.spec.type == "LoadBalancer"
        assert public.spec.external_traffic_policy == "Local"
        assert {p.port for p in public.spec.ports} == {25, 465, 587}
        secret = core.read_namespaced_secret(f"{NAME}-mailu", NS)
        assert set(secret.data) == {"secret-key", "api-token", "relay-password"}
        before = dict(secret.data)
        env = core.read_namespaced_config_map(f"{NAME}-mailu-env", NS).data
        assert env["HOSTNAMES"] == "mx.cluster.example.com" and "SECRET_KEY" not in env
        claims = {
            c.metadata.name: c.spec.access_modes
            for c in core.list_namespaced_persistent_volume_claim(NS).items
        }
        # One volume per stateful component; two fronts share theirs, declared ReadWriteMany.
        assert claims == {
            **{f"{NAME}-mailu-{c}": ["ReadWriteOnce"] for c in ("admin", "smtp", "imap")},
            **{f"{NAME}-mailu-{c}": ["ReadWriteOnce"] for c in ("antispam", "redis")},
            f"{NAME}-mailu-front-shared": ["ReadWriteMany"],
        }

        # A cloud's load-balancer controller would publish the address; do what it does.
        core.patch_namespaced_service_status(
            f"{NAME}-mailu-public",
            NS,
            {"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.25"}]}}},
        )
        obj = wait_condition(custom_objects, NS, NAME, "Provisioned", "True")
        assert obj["status"]["ipAddress"] == "192.0.2.25"
        assert obj["status"]["providerId"] == f"{NS}/{NAME}-mailu"
        # No kubelet here: the pods never run, and the condition says which components wait.
        obj = wait_condition(
            custom_objects, NS, NAME, "MailStackReady", "False", reason="DeploymentsNotAvailable"
        )
        assert "front" in condition(obj, "MailStackReady")["message"]
        # Secrets are generated once: later passes keep them.
        assert core.read_namespaced_secret(f"{NAME}-mailu", NS).data == before

        delete_and_wait_gone(custom_objects, NS, NAME)
        wait_for(
            lambda: not apps.list_namespaced_deployment(NS).items,
            timeout=60,
            what="MailU deployments garbage-collected",
        )
    finally:
        operator.stop()
