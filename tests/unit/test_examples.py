"""examples/: one commented manifest for every kind, tier, SmtpServer provider and DNS provider,
each parsing with the models the operator uses, every Secret it references included with
placeholder values, and the examples that need a real account or cluster saying so.

tests/integration/test_examples_dry_run.py applies the same files to the real API server."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from penguinmails.api.v1alpha1 import (
    GROUP_VERSION,
    RESOURCES,
    DnsProviderType,
    ProviderType,
    SendingDomain,
    SmtpServer,
    Tenant,
    Tier,
)

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
PLACEHOLDER = "REPLACE-ME"
NEEDS_REAL = "NEEDS A REAL"
MODELS = {model.resource_info.kind: model for model in RESOURCES}


def example_files() -> list[Path]:
    return sorted(EXAMPLES_DIR.rglob("*.yaml"))


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def all_documents() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in example_files() for doc in documents(path)]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in all_documents() if doc["kind"] == kind]


def secret_refs(value: Any, path: str = "spec") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every `...SecretRef` in a spec, with its path."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key.endswith("SecretRef") and isinstance(item, dict):
                yield f"{path}.{key}", item
            else:
                yield from secret_refs(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from secret_refs(item, f"{path}[{index}]")


def secret_values(secret: dict[str, Any]) -> dict[str, str]:
    values = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    return values | dict(secret.get("stringData") or {})


def test_every_kind_tier_and_provider_has_an_example() -> None:
    assert {doc["kind"] for _, doc in all_documents()} >= set(MODELS)
    tiers = {Tenant.model_validate(doc).spec.tier for doc in of_kind("Tenant")}
    assert tiers == set(Tier)
    providers = {SmtpServer.model_validate(d).spec.provider.type for d in of_kind("SmtpServer")}
    assert providers == set(ProviderType)
    dns = {SendingDomain.model_validate(d).spec.dns_provider.type for d in of_kind("SendingDomain")}
    assert dns == set(DnsProviderType)


@pytest.mark.parametrize("path", example_files(), ids=lambda p: str(p.relative_to(EXAMPLES_DIR)))
def test_an_example_parses_as_the_operator_reads_it(path: Path) -> None:
    """The operator parses specs with these models: an example they refuse would be reported
    InvalidSpec, even if the API server accepted it."""
    text = path.read_text()
    assert text.lstrip().startswith("#"), f"{path.name} starts with a comment saying what it is"
    for doc in documents(path):
        if doc["apiVersion"] == GROUP_VERSION:
            MODELS[doc["kind"]].model_validate(doc)
        else:
            assert (doc["apiVersion"], doc["kind"]) == ("v1", "Secret"), path


@pytest.mark.parametrize("path", example_files(), ids=lambda p: str(p.relative_to(EXAMPLES_DIR)))
def test_referenced_secrets_are_in_the_example_with_placeholders(path: Path) -> None:
    docs = documents(path)
    secrets = {
        (d["metadata"]["namespace"], d["metadata"]["name"]): d
        for d in docs
        if d["kind"] == "Secret"
    }
    for doc in docs:
        if doc["kind"] == "Secret":
            continue
        for where, ref in secret_refs(doc.get("spec")):
            key = (doc["metadata"].get("namespace"), ref["name"])
            assert key in secrets, f"{path.name}: {where} names Secret {ref['name']}, not included"
            values = secret_values(secrets[key])
            wanted = [ref["key"]] if "key" in ref else ["username", "password"]
            for name in wanted:
                assert name in values, f"{path.name}: Secret {ref['name']} lacks key {name}"
    for secret in secrets.values():
        for item, value in secret_values(secret).items():
            assert PLACEHOLDER in value or PLACEHOLDER in _b64_text(value), (
                f"{path.name}: Secret {secret['metadata']['name']} key {item} is not marked "
                f"as a placeholder ({PLACEHOLDER})"
            )


def _b64_text(value: str) -> str:
    try:
        return base64.b64decode(value, validate=True).decode(errors="replace")
    except (binascii.Error, ValueError):
        return ""


def test_examples_needing_a_real_account_or_cluster_say_so() -> None:
    needing = {ProviderType.HOSTWINDS, ProviderType.MAILU_IN_CLUSTER}
    marked = []
    for path, doc in all_documents():
        if doc["kind"] != "SmtpServer":
            continue
        if SmtpServer.model_validate(doc).spec.provider.type in needing:
            assert NEEDS_REAL in path.read_text(), f"{path.name} must say what it needs"
            marked.append(path.name)
    assert len(marked) == len(needing)
