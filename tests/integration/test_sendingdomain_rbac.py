"""A SendingDomain reconciled by an operator holding nothing but the Helm chart's RBAC.

The chart's ClusterRole cannot write Secrets; the operator binds `<release>-secret-writer` to
itself in a tenant's namespace to store the DKIM keys there, and is refused anywhere else.
"""

from __future__ import annotations

import base64
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from penguinmails.devstack.controlplane import write_kubeconfig
from penguinmails.devstack.dnszones import minimal_zone
from penguinmails.devstack.helm import build_helm
from penguinmails.devstack.knot import KnotServer
from penguinmails.devstack.stack import apply_documents
from penguinmails.operator import tenant_resources as res
from penguinmails.operator.secret_access import BINDING_NAME
from tests.integration.conftest import (
    GROUP,
    VERSION,
    Cluster,
    OperatorFactory,
    OperatorProcess,
    refusals,
    wait_for,
)
from tests.integration.test_chart import Helm

pytestmark = pytest.mark.integration

ZONE = "rbac.test"
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}


@pytest.fixture(scope="module")
def knot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnotServer]:
    with KnotServer(tmp_path_factory.mktemp("knot"), zones={ZONE: minimal_zone(ZONE)}) as server:
        yield server


@pytest.fixture(scope="module")
def chart_operator(
    cluster: Cluster,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    operator_process: OperatorFactory,
    knot: KnotServer,
) -> Iterator[OperatorProcess]:
    private = Path(tempfile.mkdtemp(prefix="penguinmails-sd-rbac-"))
    release, namespace = f"pm-sd-{secrets.token_hex(3)}", f"pm-sd-rel-{secrets.token_hex(3)}"
    core.create_namespace({"metadata": {"name": namespace}})
    helm = Helm(build_helm(), {"HELM_CACHE_HOME": str(private / "cache"), "PATH": "/usr/bin"})
    rendered = helm.template(release, namespace)
    documents = [d for d in rendered if d["kind"] in RBAC_KINDS]
    # The operator gets exactly the settings the chart's Deployment gives it.
    (deployment,) = [d for d in rendered if d["kind"] == "Deployment"]
    env = {
        item["name"]: item.get("value")
        for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    apply_documents(api_client, documents)
    (account,) = [d["metadata"]["name"] for d in documents if d["kind"] == "ServiceAccount"]
    token = core.create_namespaced_service_account_token(
        account, namespace, client.AuthenticationV1TokenRequest(spec={"audiences": []})
    ).status.token
    kubeconfig = private / "operator.kubeconfig"
    write_kubeconfig(kubeconfig, cluster.server, str(token), cluster.ca_file)
    handle = operator_process(
        kubeconfig=kubeconfig,
        KUBECONFIG=str(kubeconfig),
        PM_SECRET_WRITER_CLUSTERROLE=env["PM_SECRET_WRITER_CLUSTERROLE"],
        PM_OPERATOR_SERVICE_ACCOUNT=env["PM_OPERATOR_SERVICE_ACCOUNT"],
        PM_DNS_RESOLVER=f"{knot.address}:{knot.port}",
        PM_DNS_NAMESERVER_PORT=str(knot.port),
        PM_DNS_TTL_SECONDS="1",
        PM_DNS_TICK_SECONDS="1",
    )
    yield handle
    handle.stop()
    rbac = client.RbacAuthorizationV1Api(api_client)
    for document in documents:
        if document["kind"] == "ClusterRoleBinding":
            rbac.delete_cluster_role_binding(document["metadata"]["name"])
        elif document["kind"] == "ClusterRole":
            rbac.delete_cluster_role(document["metadata"]["name"])
    core.delete_namespace(namespace)
    shutil.rmtree(private, ignore_errors=True)


def domain(name: str, namespace: str, knot: KnotServer) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SendingDomain",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "domain": f"{name}.{ZONE}",
            "zone": ZONE,
            "dnsProvider": knot.rfc2136_provider(),
            "mx": {"enabled": False},
            "tlsRpt": {"enabled": True},
        },
    }


def ready_reason(api: client.CustomObjectsApi, namespace: str, name: str) -> str | None:
    obj: Any = api.get_namespaced_custom_object(GROUP, VERSION, namespace, "sendingdomains", name)
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item["type"] == "Ready":
            return str(item["reason"])
    return None


def test_dkim_secret_is_written_in_tenant_namespaces_only(
    chart_operator: OperatorProcess,
    knot: KnotServer,
    custom_objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
) -> None:
    tenant = f"sdr-{secrets.token_hex(3)}"
    namespace = res.namespace_for(tenant)
    custom_objects.create_cluster_custom_object(
        GROUP,
        VERSION,
        "tenants",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Tenant",
            "metadata": {"name": tenant},
            "spec": {"tier": "starter", "contactEmail": f"ops@{tenant}.example.com"},
        },
    )
    outside = f"not-a-tenant-{secrets.token_hex(3)}"
    core.create_namespace({"metadata": {"name": outside}})
    try:
        wait_for(
            lambda: core.list_namespace(field_selector=f"metadata.name={namespace}").items,
            what=f"namespace {namespace}",
        )
        secret = base64.b64encode(knot.tsig.secret.encode()).decode()
        for where in (namespace, outside):
            core.create_namespaced_secret(
                where, {"metadata": {"name": "tsig"}, "data": {"secret": secret}}
            )
            custom_objects.create_namespaced_custom_object(
                GROUP, VERSION, where, "sendingdomains", domain("mail", where, knot)
            )

        wait_for(
            lambda: ready_reason(custom_objects, namespace, "mail") == "Ready",
            timeout=90,
            what="SendingDomain Ready under the chart's RBAC",
        )
        assert core.read_namespaced_secret("mail-dkim", namespace).data["keys.json"]
        # TLS-RPT with no rua of its own reports to the owning Tenant's contact address.
        obj: Any = custom_objects.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "sendingdomains", "mail"
        )
        (tls_rpt,) = [r for r in obj["status"]["records"] if r["purpose"] == "tlsRpt"]
        assert tls_rpt["value"] == f"v=TLSRPTv1; rua=mailto:ops@{tenant}.example.com"
        rbac = client.RbacAuthorizationV1Api(custom_objects.api_client)
        binding = rbac.read_namespaced_role_binding(BINDING_NAME, namespace)
        assert binding.role_ref.name.endswith("-secret-writer")

        wait_for(
            lambda: ready_reason(custom_objects, outside, "mail") == "NotATenantNamespace",
            timeout=60,
            what="Ready=False NotATenantNamespace outside tenant namespaces",
        )
        with pytest.raises(ApiException) as raised:
            core.read_namespaced_secret("mail-dkim", outside)
        assert raised.value.status == 404
        log = chart_operator.log()
        # Never refused, not even outside tenant namespaces (the operator checks the label
        # first); other modules' leftovers in terminating tenant namespaces are not this test's.
        found = refusals(log, namespace)
        assert not found and "Traceback" not in log, "\n".join(found[-20:]) or log[-4000:]
    finally:
        for where in (namespace, outside):
            custom_objects.delete_namespaced_custom_object(
                GROUP, VERSION, where, "sendingdomains", "mail"
            )
        wait_for(
            lambda: (
                not any(
                    custom_objects.list_namespaced_custom_object(
                        GROUP, VERSION, where, "sendingdomains"
                    )["items"]
                    for where in (namespace, outside)
                )
            ),
            timeout=60,
            what="SendingDomains deleted",
        )
        custom_objects.delete_cluster_custom_object(GROUP, VERSION, "tenants", tenant)
        core.delete_namespace(outside)
