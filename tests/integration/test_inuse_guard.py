"""The chart's inuse-guard admission policy, on the real API server: a SendingDomain or SmtpServer
labelled as used by a sending Campaign cannot be deleted; unlabelled (the campaign paused,
completed or deleted) it can; and a namespace being deleted takes it along regardless."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiException

from penguinmails.devstack.helm import build_helm
from penguinmails.devstack.stack import apply_documents
from penguinmails.operator.inuse import LABEL_PREFIX, label_key
from tests.integration.conftest import GROUP, VERSION, wait_for
from tests.integration.smtpserver_helpers import hostwinds_body
from tests.integration.test_chart import Helm, policy_refusal

pytestmark = pytest.mark.integration

Document = dict[str, Any]


@pytest.fixture(scope="module")
def inuse_guard(api_client: client.ApiClient, crds_installed: list[str]) -> Iterator[str]:
    """The chart's inuse-guard policy and binding, applied; yields the policy's name."""
    private = Path(tempfile.mkdtemp(prefix="penguinmails-inuse-"))
    helm = Helm(build_helm(), {"HELM_CACHE_HOME": str(private / "cache"), "PATH": "/usr/bin"})
    rendered = helm.template(f"pm-inuse-{secrets.token_hex(3)}", "penguinmails-system")
    documents = [d for d in rendered if d["metadata"]["name"].endswith("-inuse-guard")]
    assert sorted(d["kind"] for d in documents) == [
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    apply_documents(api_client, documents)
    yield documents[0]["metadata"]["name"]
    admission = client.AdmissionregistrationV1Api(api_client)
    for document in documents:
        name = document["metadata"]["name"]
        if document["kind"] == "ValidatingAdmissionPolicyBinding":
            admission.delete_validating_admission_policy_binding(name)
        else:
            admission.delete_validating_admission_policy(name)
    shutil.rmtree(private, ignore_errors=True)


@pytest.fixture
def namespace(core: client.CoreV1Api) -> Iterator[str]:
    name = f"pm-inuse-{secrets.token_hex(3)}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    try:
        core.delete_namespace(name)
    except ApiException as error:
        if error.status != 404:
            raise


def _domain(name: str, labels: dict[str, str]) -> Document:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SendingDomain",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "domain": "mail.inuse.test",
            "zone": "inuse.test",
            "dnsProvider": {
                "type": "rfc2136",
                "rfc2136": {"server": "127.0.0.1", "port": 53, "tsigKeyName": "k"},
                "credentialsSecretRef": {"name": "tsig", "key": "secret"},
            },
        },
    }


def _server(name: str, labels: dict[str, str]) -> Document:
    body = hostwinds_body(name, "relay.inuse.test")
    body["metadata"]["labels"] = labels
    return body


def _deleter(
    api: client.CustomObjectsApi, namespace: str, plural: str, name: str, dry_run: bool
) -> Callable[[], object]:
    return lambda: api.delete_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, name, dry_run="All" if dry_run else None
    )


@pytest.mark.parametrize(
    ("plural", "body"), [("sendingdomains", _domain), ("smtpservers", _server)]
)
def test_delete_of_an_object_a_sending_campaign_uses_is_refused_naming_it(
    inuse_guard: str,
    custom_objects: client.CustomObjectsApi,
    namespace: str,
    plural: str,
    body: Callable[[str, dict[str, str]], Document],
) -> None:
    # Two campaigns share it: each holds its own label.
    campaigns = ("spring-launch", "x" * 70)
    labels = {label_key(c): "true" for c in campaigns}
    custom_objects.create_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, body("shared", labels)
    )
    # The API server loads a new policy asynchronously; probe with dry runs until it is in force.
    refusal = wait_for(
        lambda: policy_refusal(_deleter(custom_objects, namespace, plural, "shared", True)),
        timeout=30,
        what="the inuse-guard admission policy in force",
    )
    assert inuse_guard in refusal
    assert f"{plural} shared is in use by sending Campaign(s)" in refusal
    for campaign in campaigns:
        assert label_key(campaign).removeprefix(LABEL_PREFIX) in refusal
    assert "pause them (spec.paused: true) or delete them first" in refusal
    # For real, too.
    assert policy_refusal(_deleter(custom_objects, namespace, plural, "shared", False))

    # One campaign done: still held by the other.
    patch: Document = {"metadata": {"labels": {label_key(campaigns[0]): None}}}
    custom_objects.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, "shared", patch
    )
    refusal = policy_refusal(_deleter(custom_objects, namespace, plural, "shared", False))
    assert campaigns[0] not in refusal and label_key(campaigns[1])[len(LABEL_PREFIX) :] in refusal

    # Both done: the delete goes through, and other labels do not matter.
    labels_after: dict[str, str | None] = {label_key(campaigns[1]): None, "team": "growth"}
    patch = {"metadata": {"labels": labels_after}}
    custom_objects.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, "shared", patch
    )
    assert not policy_refusal(_deleter(custom_objects, namespace, plural, "shared", False))
    with pytest.raises(ApiException) as raised:
        custom_objects.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, "shared")
    assert raised.value.status == 404


def test_a_namespace_being_deleted_is_not_held_by_its_labels(
    inuse_guard: str,
    core: client.CoreV1Api,
    custom_objects: client.CustomObjectsApi,
    namespace: str,
) -> None:
    """A deleted Tenant's namespace goes with its campaigns: the guard must not strand it."""
    labels = {label_key("spring-launch"): "true"}
    custom_objects.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "sendingdomains", _domain("held", labels)
    )
    delete = _deleter(custom_objects, namespace, "sendingdomains", "held", True)
    wait_for(lambda: policy_refusal(delete), timeout=30, what="the inuse-guard policy in force")
    core.delete_namespace(namespace)

    def released() -> bool:
        try:
            return not policy_refusal(delete)
        except ApiException as error:  # the namespace controller already removed it
            return bool(error.status == 404)

    wait_for(released, timeout=30, what=f"the labelled domain deletable in terminating {namespace}")
