"""Every manifest in examples/ is accepted by the real API server with the CRDs installed:
server-side apply with dryRun=All and strict field validation, so a field renamed or tightened in
the models (and `make crds`) fails here until the examples follow."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient

from tests.integration.conftest import wait_for
from tests.unit.test_examples import EXAMPLES_DIR, all_documents, documents, example_files

pytestmark = pytest.mark.integration

FIELD_MANAGER = "examples-dry-run"


@pytest.fixture(scope="module")
def example_namespaces(core: client.CoreV1Api, crds_installed: list[str]) -> Iterator[list[str]]:
    """The namespaces the examples live in (in a cluster, the Tenant operator makes them);
    only those created here are deleted afterwards."""
    wanted = sorted(
        {d["metadata"]["namespace"] for _, d in all_documents() if "namespace" in d["metadata"]}
    )
    created = []
    for name in wanted:
        try:
            core.create_namespace({"metadata": {"name": name}})
            created.append(name)
        except ApiException as error:
            if error.status != 409:
                raise

    # Namespaced requests are refused until the namespace is in the API server's cache.
    def active(name: str) -> bool:
        return bool(core.read_namespace(name).status.phase == "Active")

    for name in wanted:
        wait_for(lambda: active(name), what=f"namespace {name}")  # noqa: B023 (called at once)
    yield wanted
    for name in created:
        core.delete_namespace(name)


def dry_run_apply(api: client.ApiClient, document: dict[str, Any]) -> dict[str, Any]:
    """What the API server would store, without storing it."""
    dynamic = DynamicClient(api)
    resource = dynamic.resources.get(api_version=document["apiVersion"], kind=document["kind"])
    result = dynamic.server_side_apply(
        resource,
        body=document,
        name=document["metadata"]["name"],
        namespace=document["metadata"].get("namespace"),
        field_manager=FIELD_MANAGER,
        dry_run="All",
        query_params=[("fieldValidation", "Strict")],
    )
    return dict(result.to_dict())


def stored(api: client.ApiClient, document: dict[str, Any]) -> bool:
    dynamic = DynamicClient(api)
    resource = dynamic.resources.get(api_version=document["apiVersion"], kind=document["kind"])
    try:
        dynamic.get(
            resource,
            name=document["metadata"]["name"],
            namespace=document["metadata"].get("namespace"),
        )
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


@pytest.mark.parametrize("path", example_files(), ids=lambda p: str(p.relative_to(EXAMPLES_DIR)))
def test_the_api_server_accepts_the_example(
    path: Path, api_client: client.ApiClient, example_namespaces: list[str]
) -> None:
    for document in documents(path):
        existed = stored(api_client, document)
        accepted = dry_run_apply(api_client, document)
        assert accepted["kind"] == document["kind"]
        assert accepted["metadata"]["name"] == document["metadata"]["name"]
        if document["kind"] != "Secret":
            # The CRD's defaults were applied: what `kubectl get -o yaml` would show.
            assert set(document["spec"]) <= set(accepted["spec"])
        # A dry run: nothing was created.
        assert stored(api_client, document) == existed, document["metadata"]


def test_a_drifted_example_is_refused_naming_the_field(
    api_client: client.ApiClient, example_namespaces: list[str]
) -> None:
    """The check can fail: an unknown field (a rename the examples missed) and a value the
    schema forbids are both refused by the dry run."""
    server = next(d for _, d in all_documents() if d["kind"] == "SmtpServer")
    renamed = copy.deepcopy(server)
    renamed["spec"]["helloName"] = renamed["spec"].pop("hostname")
    with pytest.raises(ApiException) as raised:
        dry_run_apply(api_client, renamed)
    message = json.loads(raised.value.body)["message"]
    assert ".spec.helloName: field not declared in schema" in message, message

    tenant = next(d for _, d in all_documents() if d["kind"] == "Tenant")
    invalid = copy.deepcopy(tenant)
    invalid["spec"]["tier"] = "platinum"
    with pytest.raises(ApiException) as raised:
        dry_run_apply(api_client, invalid)
    assert "spec.tier" in json.loads(raised.value.body)["message"]
