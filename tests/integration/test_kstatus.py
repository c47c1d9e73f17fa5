"""GitOps health, proven: what Flux (kstatus, from sigs.k8s.io/cli-utils, run from its Go module by
dev/kstatus/) and the chart's Argo CD checks (Lua) say about the four kinds, on objects the real
operator process wrote on the real API server.

For every kind: InProgress (Argo CD: Progressing) while the operator has not caught up or waits
for something it retries, Current (Healthy) once Ready, Failed (Degraded) on a permanent failure.
"""

from __future__ import annotations

import base64
import contextlib
import secrets
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from penguinmails.common.dkim.keys import INDEX_KEY
from penguinmails.devstack import kstatus
from penguinmails.devstack.knot import KnotServer, minimal_zone
from penguinmails.devstack.sink import SinkServer
from tests.integration.conftest import GROUP, VERSION, OperatorFactory, OperatorProcess, wait_for
from tests.unit.test_argocd_health import HEALTH_DIR
from tests.unit.test_argocd_health import _run as argocd_health

pytestmark = pytest.mark.integration

ZONE = "kstatus.test"
PLURALS = {
    "Tenant": "tenants",
    "SmtpServer": "smtpservers",
    "SendingDomain": "sendingdomains",
    "Campaign": "campaigns",
}
TENANT_SPEC = {
    "tier": "professional",  # room for three SmtpServers and two SendingDomains
    "contactEmail": "ops@kstatus.test",
    "postalAddress": {"street": "1 Penguin Way", "city": "Iceberg", "country": "AQ"},
}
# kstatus's verdict and the Argo CD health a check must give the same object.
ARGO_FOR = {"InProgress": "Progressing", "Current": "Healthy", "Failed": "Degraded"}


@pytest.fixture(scope="module")
def knot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnotServer]:
    with KnotServer(tmp_path_factory.mktemp("knot"), zones={ZONE: minimal_zone(ZONE)}) as server:
        yield server


@pytest.fixture(scope="module")
def checker() -> Path:
    """The kstatus binary (built once per machine, then cached)."""
    return kstatus.build().bin_dir / kstatus.BINARY


@pytest.fixture(scope="module")
def operator(operator_process: OperatorFactory, knot: KnotServer) -> Iterator[OperatorProcess]:
    handle = operator_process(
        PM_DNS_RESOLVER=f"{knot.address}:{knot.port}",
        PM_DNS_NAMESERVER_PORT=str(knot.port),
        PM_DNS_TTL_SECONDS="1",
        PM_DNS_TICK_SECONDS="1",
        PM_DNS_TIMEOUT_SECONDS="2",
        # Probes are proven elsewhere (test_smtpserver_probes.py); here a relay is Ready once
        # its settings are complete, and a missing Secret is re-checked within seconds.
        PM_SMTP_PROBE_SECONDS="0",
        PM_SMTP_POLL_SECONDS="2",
    )
    yield handle
    handle.stop()
    handle.assert_no_errors()


class Health:
    """Reads an object from the API server and judges it the way Flux and Argo CD do."""

    def __init__(self, api: client.CustomObjectsApi, binary: Path) -> None:
        self.api, self.binary = api, binary

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        if namespace is None:
            return dict(self.api.get_cluster_custom_object(GROUP, VERSION, PLURALS[kind], name))
        return dict(
            self.api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[kind], name)
        )

    def judge(self, obj: dict[str, Any]) -> tuple[kstatus.KStatus, dict[str, str]]:
        (flux,) = kstatus.compute([obj], self.binary)
        argo = argocd_health(HEALTH_DIR / f"penguinmails.io_{obj['kind']}" / "health.lua", obj)
        return flux, argo

    def reaches(
        self,
        want: str,
        kind: str,
        name: str,
        namespace: str | None = None,
        timeout: float = 90,
        because: str | None = None,
        argo_says: str | None = None,
    ) -> tuple[kstatus.KStatus, dict[str, str], dict[str, Any]]:
        """Wait until kstatus says `want` (for the operator's condition reason `because`, the
        Reconciling or Stalled one); then Argo CD's check must agree on the same object
        (`argo_says` where it has more to say than kstatus: Suspended)."""
        condition = {"InProgress": "Reconciling", "Failed": "Stalled"}.get(want, "Ready")

        def poll() -> tuple[kstatus.KStatus, dict[str, str], dict[str, Any]] | None:
            obj = self.get(kind, name, namespace)
            flux, argo = self.judge(obj)
            reason = conditions_of(obj).get(condition, {}).get("reason")
            if flux.status != want or (because is not None and reason != because):
                return None
            return flux, argo, obj

        flux, argo, obj = wait_for(poll, timeout=timeout, what=f"{kind} {name} kstatus {want}")
        assert argo["status"] == (argo_says or ARGO_FOR[want]), (argo, obj.get("status"))
        return flux, argo, obj


def test_kstatus_agrees_with_every_argocd_test_case(checker: Path) -> None:
    """The Argo CD checks' own test objects (the shapes the operator writes): kstatus gives each
    the verdict that matches Argo CD's, except Suspended, which kstatus has no word for."""
    cases = [
        (folder / test["inputPath"], test["healthStatus"]["status"])
        for folder in sorted(HEALTH_DIR.iterdir())
        for test in yaml.safe_load((folder / "health_test.yaml").read_text())["tests"]
    ]
    objects = [yaml.safe_load(path.read_text()) for path, _ in cases]
    verdicts = kstatus.compute(objects, checker)
    argo_for = {flux: {argo} for flux, argo in ARGO_FOR.items()}
    argo_for["Current"].add("Suspended")
    for (path, argo), flux in zip(cases, verdicts, strict=True):
        assert argo in argo_for[flux.status], (path, flux, argo)
    assert {flux.status for flux in verdicts} == {"InProgress", "Current", "Failed"}


@pytest.fixture(scope="module")
def health(custom_objects: client.CustomObjectsApi, checker: Path) -> Health:
    return Health(custom_objects, checker)


def conditions_of(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


@pytest.fixture(scope="module")
def tenant(
    operator: OperatorProcess, custom_objects: client.CustomObjectsApi, health: Health
) -> Iterator[str]:
    """A Ready Tenant whose namespace holds the other kinds; deleted with them at the end while
    the operator still runs, so finalizers complete."""
    name = f"kst-{secrets.token_hex(3)}"
    custom_objects.create_cluster_custom_object(
        GROUP,
        VERSION,
        "tenants",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Tenant",
            "metadata": {"name": name},
            "spec": {**TENANT_SPEC, "displayName": "kstatus"},
        },
    )
    health.reaches("Current", "Tenant", name)
    yield name
    namespace = f"tenant-{name}"
    for plural in ("campaigns", "sendingdomains", "smtpservers"):
        custom_objects.delete_collection_namespaced_custom_object(GROUP, VERSION, namespace, plural)
    for plural in ("campaigns", "sendingdomains", "smtpservers"):
        wait_for(partial(_empty, custom_objects, namespace, plural), what=f"{plural} deleted")
    _delete_tenant(custom_objects, name)


def _empty(api: client.CustomObjectsApi, namespace: str, plural: str) -> bool:
    return not api.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)["items"]


def _delete_tenant(api: client.CustomObjectsApi, name: str) -> None:
    api.delete_cluster_custom_object(GROUP, VERSION, "tenants", name)

    def gone() -> bool:
        items = api.list_cluster_custom_object(GROUP, VERSION, "tenants")["items"]
        return all(t["metadata"]["name"] != name for t in items)

    wait_for(gone, timeout=60, what=f"Tenant {name} deleted")


def test_tenant(
    api_client: client.ApiClient,
    operator: OperatorProcess,
    tenant: str,
    health: Health,
    custom_objects: client.CustomObjectsApi,
) -> None:
    flux, argo, obj = health.reaches("Current", "Tenant", tenant)
    assert conditions_of(obj)["Stalled"]["status"] == "False"
    assert argo["message"].startswith("Reconciled: ")

    # A spec change the operator has not seen yet: both say so, from observedGeneration.
    operator.stop()
    try:
        custom_objects.patch_cluster_custom_object(
            GROUP, VERSION, "tenants", tenant, {"spec": {"displayName": "kstatus, renamed"}}
        )
        flux, argo = health.judge(health.get("Tenant", tenant))
        assert (flux.status, argo["status"]) == ("InProgress", "Progressing")
        assert flux.message == "Tenant generation is 2, but latest observed generation is 1"
        assert argo["message"] == "waiting for the operator to observe generation 2"

        # A new Tenant before the operator wrote any status: defaulted status.observedGeneration
        # (0) keeps kstatus from calling an object nobody has looked at Current.
        fresh = f"kst-{secrets.token_hex(3)}"
        custom_objects.create_cluster_custom_object(
            GROUP,
            VERSION,
            "tenants",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Tenant",
                "metadata": {"name": fresh},
                "spec": TENANT_SPEC,
            },
        )
        flux, argo = health.judge(health.get("Tenant", fresh))
        assert (flux.status, argo["status"]) == ("InProgress", "Progressing"), flux
    finally:
        operator.start()
    health.reaches("Current", "Tenant", tenant)
    health.reaches("Current", "Tenant", fresh)
    _delete_tenant(custom_objects, fresh)

    # Permanent: the cluster's own admission (here a ValidatingAdmissionPolicy, as a platform
    # team's policy engine would) refuses the tenant's namespace; retrying cannot help.
    bad = f"kst-{secrets.token_hex(3)}"
    with refused_namespace(api_client, f"tenant-{bad}"):
        custom_objects.create_cluster_custom_object(
            GROUP,
            VERSION,
            "tenants",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Tenant",
                "metadata": {"name": bad},
                "spec": TENANT_SPEC,
            },
        )
        flux, argo, obj = health.reaches("Failed", "Tenant", bad)
        stalled = conditions_of(obj)["Stalled"]
        assert stalled["reason"] == "Rejected"
        assert "namespaces are refused here" in flux.message
        assert flux.message == stalled["message"]
        assert argo["message"] == f"Rejected: {stalled['message']}"
    _delete_tenant(custom_objects, bad)


@contextlib.contextmanager
def refused_namespace(api_client: client.ApiClient, namespace: str) -> Iterator[None]:
    """While inside: the API server's admission refuses to create `namespace` (422 Invalid)."""
    admission = client.AdmissionregistrationV1Api(api_client)
    name = f"refuse-{namespace}"
    admission.create_validating_admission_policy(
        {
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["namespaces"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": f"object.metadata.name != '{namespace}'",
                        "message": "namespaces are refused here",
                        "reason": "Invalid",
                    }
                ],
            },
        }
    )
    admission.create_validating_admission_policy_binding(
        {"metadata": {"name": name}, "spec": {"policyName": name, "validationActions": ["Deny"]}}
    )
    core = client.CoreV1Api(api_client)

    def enforced() -> bool:
        try:
            core.create_namespace({"metadata": {"name": namespace}}, dry_run="All")
        except client.ApiException as error:
            return bool(error.status == 422)
        return False

    try:
        wait_for(enforced, timeout=30, what="the admission policy enforced")
        yield
    finally:
        admission.delete_validating_admission_policy_binding(name)
        admission.delete_validating_admission_policy(name)


def test_smtpserver(
    tenant: str, health: Health, custom_objects: client.CustomObjectsApi, core: client.CoreV1Api
) -> None:
    namespace = f"tenant-{tenant}"
    with SinkServer() as sink:
        relay = {"host": "127.0.0.1", "port": sink.port, "tls": "none"}
        relay["credentialsSecretRef"] = {"name": "relay-login"}
        custom_objects.create_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            "smtpservers",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "SmtpServer",
                "metadata": {"name": "relay"},
                "spec": {"hostname": "relay.kstatus.test", "provider": {"relay": relay}},
            },
        )
        # Waiting for a Secret the operator re-reads: in progress, not failed.
        flux, argo, obj = health.reaches(
            "InProgress", "SmtpServer", "relay", namespace, because="SecretNotFound"
        )
        assert conditions_of(obj)["Stalled"]["status"] == "False"
        assert "relay-login" in flux.message
        core.create_namespaced_secret(
            namespace,
            {
                "metadata": {"name": "relay-login"},
                "stringData": {"username": "u", "password": secrets.token_hex(8)},
            },
        )
        health.reaches("Current", "SmtpServer", "relay", namespace)

    # Permanent: the platform's egress policy refuses the relay's address (no retry helps).
    custom_objects.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "smtpservers",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "SmtpServer",
            "metadata": {"name": "private"},
            "spec": {
                "hostname": "private.kstatus.test",
                "provider": {"relay": {"host": "10.0.0.25", "port": 25, "tls": "none"}},
            },
        },
    )
    flux, argo, obj = health.reaches("Failed", "SmtpServer", "private", namespace)
    assert conditions_of(obj)["Stalled"]["reason"] == "DestinationNotAllowed"
    assert obj["status"]["phase"] == "Failed"
    assert "10.0.0.25" in flux.message
    assert argo["message"].startswith("DestinationNotAllowed: ")


def test_sendingdomain_and_campaign(
    tenant: str,
    health: Health,
    knot: KnotServer,
    custom_objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
) -> None:
    namespace = f"tenant-{tenant}"
    create = partial(custom_objects.create_namespaced_custom_object, GROUP, VERSION, namespace)
    with SinkServer() as sink:
        relay = {"host": "127.0.0.1", "port": sink.port, "tls": "none"}
        create(
            "smtpservers",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "SmtpServer",
                "metadata": {"name": "out"},
                "spec": {"hostname": "out.kstatus.test", "provider": {"relay": relay}},
            },
        )
        health.reaches("Current", "SmtpServer", "out", namespace)
    create(
        "sendingdomains",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "SendingDomain",
            "metadata": {"name": "acme"},
            "spec": {
                "domain": ZONE,
                "dnsProvider": knot.rfc2136_provider("tsig"),
                "smtpServerRefs": [{"name": "out"}],
                "mx": {"enabled": False},
                "dmarc": {"policy": "none"},
                "verifyInterval": "2s",
            },
        },
    )
    create(
        "campaigns",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Campaign",
            "metadata": {"name": "hello"},
            "spec": {
                "sendingDomainRef": {"name": "acme"},
                "from": {"address": f"jane@{ZONE}", "name": "Jane"},
                "subject": "Hello",
                "text": "Hi, a short note.",
                "audience": {"lists": ["leads"]},
                "paused": True,
            },
        },
    )
    # Without its TSIG Secret the domain waits (retried), and the campaign waits for the domain.
    flux, _, obj = health.reaches(
        "InProgress", "SendingDomain", "acme", namespace, because="CredentialsSecretMissing"
    )
    assert "tsig" in flux.message
    # Paused by its spec, the campaign is Suspended for Argo CD whatever else it waits for.
    flux, _, obj = health.reaches(
        "InProgress",
        "Campaign",
        "hello",
        namespace,
        because="PreflightFailed",
        argo_says="Suspended",
    )
    assert "acme" in flux.message

    core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "tsig"},
            "data": {"secret": base64.b64encode(knot.tsig.secret.encode()).decode()},
        },
    )
    health.reaches("Current", "SendingDomain", "acme", namespace, timeout=120)
    # Ready (paused by its spec): Flux sees Current; Argo CD tells Suspended apart.
    flux, _, obj = health.reaches(
        "Current", "Campaign", "hello", namespace, timeout=120, argo_says="Suspended"
    )
    assert conditions_of(obj)["Ready"]["reason"] == "Paused"

    # Permanent: a time zone the CRD's pattern lets through but no zone database knows.
    create(
        "campaigns",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Campaign",
            "metadata": {"name": "nowhere"},
            "spec": {
                "sendingDomainRef": {"name": "acme"},
                "from": {"address": f"jane@{ZONE}"},
                "subject": "Hello",
                "text": "Hi.",
                "audience": {"lists": ["leads"]},
                "schedule": {"window": {"timezone": "Mars/Olympus_Mons"}},
            },
        },
    )
    flux, argo, obj = health.reaches("Failed", "Campaign", "nowhere", namespace)
    assert conditions_of(obj)["Stalled"]["reason"] == "InvalidSpec"
    assert "Mars/Olympus_Mons" in flux.message

    # Permanent: the domain's DKIM key Secret is not a key set; the operator will not replace it.
    core.create_namespaced_secret(
        namespace,
        {"metadata": {"name": "broken-dkim"}, "stringData": {INDEX_KEY: "not a key index"}},
    )
    create(
        "sendingdomains",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "SendingDomain",
            "metadata": {"name": "broken"},
            "spec": {
                "domain": f"broken.{ZONE}",
                "zone": ZONE,
                "dnsProvider": knot.rfc2136_provider("tsig"),
                "smtpServerRefs": [{"name": "out"}],
            },
        },
    )
    flux, argo, obj = health.reaches("Failed", "SendingDomain", "broken", namespace)
    assert conditions_of(obj)["Stalled"]["reason"] == "DKIMSecretMalformed"
    assert argo["message"].startswith("DKIMSecretMalformed: ")
