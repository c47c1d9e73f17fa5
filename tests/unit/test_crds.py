"""The generated CRDs: structural, bounded for CEL cost, consistent with the models, and the
committed files are up to date (``python -m penguinmails.api.crdgen --check``)."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from penguinmails.api import crdgen
from penguinmails.api.v1alpha1 import (
    RESOURCES,
    TIERS,
    Campaign,
    SendingDomain,
    SmtpServer,
    Tenant,
    Tier,
)
from penguinmails.api.v1alpha1.common import DNS_LABEL_PATTERN, Resource
from penguinmails.api.v1alpha1.tenant import TENANT_NAME_MAX_LENGTH

from .test_models import CAMPAIGN, DOMAIN, SMTP_HOSTWINDS, SMTP_RELAY, TENANT

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "crds"
DOCS = ROOT / "docs" / "resources.md"

# Short names of the built-in kinds (kubectl api-resources) that ours must not shadow.
BUILTIN_SHORT_NAMES = {
    "cm", "cs", "csr", "crd", "crds", "ds", "deploy", "ep", "eps", "ev", "hpa", "ing", "ingclass",
    "limits", "netpol", "no", "ns", "pc", "pdb", "po", "psp", "pv", "pvc", "quota", "rc", "rs",
    "sa", "sc", "sts", "svc", "vac", "ipa", "cidr", "dra", "pcs", "rcs",
}  # fmt: skip

MINIMAL: dict[type[Resource], dict[str, Any]] = {
    Tenant: {"tier": "starter", "contactEmail": "ops@acme.example"},
    SmtpServer: {"hostname": "mx1.acme.example", "provider": {"relay": {"host": "127.0.0.1"}}},
    SendingDomain: {"domain": "acme.example", "dnsProvider": {"type": "manual"}},
    Campaign: {
        "sendingDomainRef": {"name": "d"},
        "from": {"address": "a@acme.example"},
        "subject": "Hi",
        "text": "Hello",
        "audience": {"lists": ["leads"]},
    },
}
FULL: dict[type[Resource], list[dict[str, Any]]] = {
    Tenant: [TENANT],
    SmtpServer: [SMTP_RELAY, SMTP_HOSTWINDS],
    SendingDomain: [DOMAIN],
    Campaign: [CAMPAIGN],
}


def load(resource: type[Resource]) -> dict[str, Any]:
    """The CRD as generated now (test_committed_files_are_current ties it to crds/)."""
    return crdgen.build_crd(resource)


def root_schema(resource: type[Resource]) -> dict[str, Any]:
    schema = load(resource)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert isinstance(schema, dict)
    return schema


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path."""
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}.*")
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[]")


ALL = pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.__name__)

# --------------------------------------------------------------------------------------------
# Committed files are current
# --------------------------------------------------------------------------------------------


def test_committed_files_are_current() -> None:
    assert crdgen.main(["--check"]) == 0
    assert sorted(p.name for p in CRD_DIR.glob("*.yaml")) == sorted(
        crdgen.crd_filename(r) for r in RESOURCES
    )


@ALL
def test_committed_yaml_is_the_generated_crd(resource: type[Resource]) -> None:
    path = CRD_DIR / crdgen.crd_filename(resource)
    text = path.read_text(encoding="utf-8")
    assert text.startswith(crdgen.HEADER)
    assert yaml.safe_load(text) == crdgen.build_crd(resource)


def _copy_outputs(tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "crds"
    shutil.copytree(CRD_DIR, out)
    docs = tmp_path / "resources.md"
    shutil.copy(DOCS, docs)
    return out, docs


def test_check_fails_on_a_modified_crd(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, docs = _copy_outputs(tmp_path)
    args = ["--check", "--out", str(out), "--docs", str(docs)]
    assert crdgen.main(args) == 0
    target = out / "tenants.penguinmails.io.yaml"
    target.write_text(target.read_text().replace("maxLength: 254", "maxLength: 255"))
    capsys.readouterr()
    assert crdgen.main(args) == 1
    err = capsys.readouterr().err
    assert f"{target} is stale: run `make crds`" in err
    assert "campaigns" not in err  # only the modified file is reported
    # Writing repairs it, byte for byte.
    assert crdgen.main(args[1:]) == 0
    assert target.read_bytes() == (CRD_DIR / target.name).read_bytes()
    assert crdgen.main(args) == 0


def test_check_fails_on_missing_extra_and_docs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, docs = _copy_outputs(tmp_path)
    args = ["--check", "--out", str(out), "--docs", str(docs)]
    (out / "campaigns.penguinmails.io.yaml").unlink()
    (out / "mailboxes.penguinmails.io.yaml").write_text("old\n")
    docs.write_text(docs.read_text().replace("| 10,000 |", "| 20,000 |"))
    assert crdgen.main(args) == 1
    err = capsys.readouterr().err
    assert "campaigns.penguinmails.io.yaml is stale" in err
    assert "mailboxes.penguinmails.io.yaml belongs to no kind any more" in err
    assert f"{docs} is stale: run `make crds`" in err
    assert crdgen.main(args[1:]) == 0
    assert not (out / "mailboxes.penguinmails.io.yaml").exists()
    assert docs.read_text() == DOCS.read_text()


def test_cli_entry_point(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "penguinmails.api.crdgen", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    out, docs = _copy_outputs(tmp_path)
    (out / "sendingdomains.penguinmails.io.yaml").write_text("stale\n")
    stale = subprocess.run(
        [
            sys.executable,
            "-m",
            "penguinmails.api.crdgen",
            "--check",
            "--out",
            str(out),
            "--docs",
            str(docs),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert stale.returncode == 1
    assert "sendingdomains.penguinmails.io.yaml is stale: run `make crds`" in stale.stderr


def test_generation_is_deterministic() -> None:
    for resource in RESOURCES:
        assert crdgen.render_crd(resource) == crdgen.render_crd(resource)
    assert crdgen.render_reference() == crdgen.render_reference()


# --------------------------------------------------------------------------------------------
# Structural schema
# --------------------------------------------------------------------------------------------

FORBIDDEN_KEYS = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "const", "title", "nullable"}


@ALL
def test_schema_is_structural(resource: type[Resource]) -> None:
    schema = root_schema(resource)
    assert schema["properties"]["metadata"] == {"type": "object"}
    for path, node in walk(schema):
        assert not FORBIDDEN_KEYS & node.keys(), (path, FORBIDDEN_KEYS & node.keys())
        assert "type" in node, path
        assert node["type"] in {"object", "array", "string", "integer", "number", "boolean"}, path
        if node["type"] == "object" and path != ".metadata":
            has_shape = (
                "properties" in node
                or isinstance(node.get("additionalProperties"), dict)
                or node.get("x-kubernetes-preserve-unknown-fields") is True
            )
            assert has_shape, path
            assert node.get("additionalProperties") is not False, path
            assert not ("properties" in node and "additionalProperties" in node), path
            for name in node.get("required", ()):
                assert name in node["properties"], (path, name)
        if node["type"] == "array":
            assert "items" in node, path
        for flag in ("exclusiveMinimum", "exclusiveMaximum"):
            assert isinstance(node.get(flag, False), bool), path
        if path.count(".") >= 2 and path != ".metadata":
            assert node.get("description") or path.endswith("[]"), f"{path} lacks a description"


@ALL
def test_status_has_no_defaults_and_spec_defaults_are_valid(resource: type[Resource]) -> None:
    schema = root_schema(resource)
    status = schema["properties"]["status"]
    # The one status default: an object not written yet has observed generation 0 (kstatus).
    assert status["default"] == {"observedGeneration": 0}
    _assert_valid(status["default"], status, ".status")
    for path, node in walk(status, ".status"):
        assert "default" not in node or path == ".status", path
    for path, node in walk(schema["properties"]["spec"], ".spec"):
        if "default" in node:
            _assert_valid(node["default"], node, path)


def _assert_valid(value: Any, schema: dict[str, Any], path: str) -> None:
    kind = schema["type"]
    if kind == "object":
        assert isinstance(value, dict), path
        for name, sub in value.items():
            _assert_valid(sub, schema["properties"][name], f"{path}.{name}")
        return
    if kind == "array":
        assert isinstance(value, list), path
        assert len(value) <= schema.get("maxItems", len(value)), path
        for item in value:
            _assert_valid(item, schema["items"], f"{path}[]")
        if schema.get("x-kubernetes-list-type") == "set":
            assert len(set(value)) == len(value), path
        return
    if kind == "string":
        assert isinstance(value, str), path
        assert re.search(schema.get("pattern", ""), value), path
        assert len(value) <= schema.get("maxLength", len(value)), path
    elif kind == "boolean":
        assert isinstance(value, bool), path
    else:
        assert isinstance(value, int | float) and not isinstance(value, bool), path
        assert schema.get("minimum", value) <= value <= schema.get("maximum", value), path
    if "enum" in schema:
        assert value in schema["enum"], path


@ALL
def test_everything_is_bounded(resource: type[Resource]) -> None:
    """Bounded strings, lists and maps keep CEL cost estimates (and objects) small."""
    for path, node in walk(root_schema(resource)):
        if path in {".apiVersion", ".kind"}:
            continue
        if node["type"] == "string":
            bounded = "maxLength" in node or "enum" in node or node.get("format") == "date-time"
            assert bounded, f"{path}: string without maxLength"
        if node["type"] == "array":
            assert "maxItems" in node, f"{path}: array without maxItems"
        if node["type"] == "object" and isinstance(node.get("additionalProperties"), dict):
            assert "maxProperties" in node, f"{path}: map without maxProperties"


@ALL
def test_patterns_are_re2_compatible(resource: type[Resource]) -> None:
    for path, node in walk(root_schema(resource)):
        pattern = node.get("pattern")
        if pattern is None:
            continue
        re.compile(pattern)
        for construct in ("(?=", "(?!", "(?<=", "(?<!", "(?P=", "\\1", "\\Z", "\\z"):
            assert construct not in pattern, (path, construct)
        assert pattern.startswith("^") and pattern.endswith("$"), path


@ALL
def test_list_types(resource: type[Resource]) -> None:
    schema = root_schema(resource)
    conditions = schema["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert schema["properties"]["status"]["properties"]["observedGeneration"]["type"] == "integer"
    for path, node in walk(schema):
        list_type = node.get("x-kubernetes-list-type")
        if list_type == "map":
            item = node["items"]
            for key in node["x-kubernetes-list-map-keys"]:
                assert key in item.get("required", []) or "default" in item["properties"][key], (
                    path,
                    key,
                )
        elif list_type == "set":
            assert node["items"]["type"] in {"string", "integer", "number", "boolean"}, path


@ALL
def test_cel_rules_are_well_formed(resource: type[Resource]) -> None:
    count = 0
    for path, node in walk(root_schema(resource)):
        for rule in node.get("x-kubernetes-validations", ()):
            count += 1
            assert set(rule) <= {"rule", "message", "fieldPath", "reason"}, path
            assert rule["rule"].strip() and rule["message"].strip(), path
            if "fieldPath" in rule:
                field = rule["fieldPath"].lstrip(".").split(".")[0]
                assert field in node["properties"], (path, rule["fieldPath"])
            if "reason" in rule:
                assert rule["reason"] in {
                    "FieldValueInvalid",
                    "FieldValueForbidden",
                    "FieldValueRequired",
                    "FieldValueDuplicate",
                }
            if "oldSelf" in rule["rule"]:
                assert "[]" not in path, f"{path}: transition rules cannot sit inside lists"
    assert count >= 1


IMMUTABLE = {
    SmtpServer: ".spec.hostname",
    SendingDomain: ".spec.domain",
    Campaign: ".spec.sendingDomainRef",
}


@pytest.mark.parametrize(("resource", "path"), IMMUTABLE.items(), ids=lambda v: str(v))
def test_immutable_fields(resource: type[Resource], path: str) -> None:
    nodes = dict(walk(root_schema(resource)))
    rules = [r["rule"] for r in nodes[path].get("x-kubernetes-validations", ())]
    assert "self == oldSelf" in rules
    assert path.rsplit(".", 1)[1] in nodes[path.rsplit(".", 1)[0]]["required"]


def test_smtp_provider_rules() -> None:
    provider = dict(walk(root_schema(SmtpServer)))[".spec.provider"]
    assert set(provider["properties"]) == {"hostwinds", "mailuInCluster", "relay"}
    rules = [r["rule"] for r in provider["x-kubernetes-validations"]]
    assert any(r.endswith("== 1") and "has(self.relay)" in r for r in rules)
    assert any("oldSelf" in r for r in rules)


def test_tenant_name_rules_at_the_root() -> None:
    rules = root_schema(Tenant)["x-kubernetes-validations"]
    assert [r["rule"] for r in rules] == [
        "self.metadata.name.size() <= 56",
        f"self.metadata.name.matches('{DNS_LABEL_PATTERN}')",
    ]
    assert TENANT_NAME_MAX_LENGTH == 56
    assert all(r["message"].startswith("metadata.name must be") for r in rules)


# --------------------------------------------------------------------------------------------
# CRD metadata
# --------------------------------------------------------------------------------------------


@ALL
def test_crd_metadata(resource: type[Resource]) -> None:
    crd = load(resource)
    info = resource.resource_info
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == f"{info.plural}.penguinmails.io"
    spec = crd["spec"]
    assert spec["group"] == "penguinmails.io"
    assert spec["scope"] == ("Cluster" if resource is Tenant else "Namespaced")
    names = spec["names"]
    assert names["kind"] == resource.__name__
    assert names["listKind"] == f"{resource.__name__}List"
    assert names["plural"] == resource.__name__.lower() + "s"
    assert names["singular"] == resource.__name__.lower()
    assert names["categories"] == ["penguinmails"]
    assert not set(names["shortNames"]) & BUILTIN_SHORT_NAMES
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Age"] == {
        "name": "Age",
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
        "description": "Time since the object was created.",
    }
    assert len(columns) >= 4  # at least one column that matters for the kind
    for column in columns.values():
        assert column["jsonPath"].startswith((".spec.", ".status.", ".metadata."))
        assert column["type"] in {"string", "integer", "number", "boolean", "date"}


def test_short_names_are_unique() -> None:
    short = [s for r in RESOURCES for s in r.resource_info.short_names]
    assert sorted(short) == sorted(set(short))
    assert short == ["tn", "smtp", "sd", "camp"]


# --------------------------------------------------------------------------------------------
# The CRD and the models agree
# --------------------------------------------------------------------------------------------


def apply_defaults(obj: Any, schema: dict[str, Any]) -> None:
    """What the API server's structural defaulting does (parents first, then children)."""
    if schema["type"] == "object" and isinstance(obj, dict):
        for name, sub in schema.get("properties", {}).items():
            if name not in obj and "default" in sub:
                obj[name] = copy.deepcopy(sub["default"])
            if name in obj:
                apply_defaults(obj[name], sub)
    elif schema["type"] == "array" and isinstance(obj, list):
        for item in obj:
            apply_defaults(item, schema["items"])


def drop_empty_lists(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: drop_empty_lists(v) for k, v in obj.items() if v != []}
    if isinstance(obj, list):
        return [drop_empty_lists(v) for v in obj]
    return obj


@ALL
def test_crd_defaults_equal_model_defaults(resource: type[Resource]) -> None:
    spec_schema = root_schema(resource)["properties"]["spec"]
    spec_model = resource.resource_info.spec_model
    for spec in [MINIMAL[resource], *(ex["spec"] for ex in FULL[resource])]:
        by_server = copy.deepcopy(spec)
        apply_defaults(by_server, spec_schema)
        by_model = spec_model.model_validate(spec).to_k8s()
        assert drop_empty_lists(by_server) == drop_empty_lists(by_model)


@ALL
def test_crd_fields_equal_model_fields(resource: type[Resource]) -> None:
    """Every model field appears in the CRD under its alias, required exactly when required."""
    info = resource.resource_info
    for model, key in ((info.spec_model, "spec"), (info.status_model, "status")):
        node = root_schema(resource)["properties"][key]
        aliases = {f.alias or name: f for name, f in model.model_fields.items()}
        assert set(node["properties"]) == set(aliases)
        required = {a for a, f in aliases.items() if f.is_required()}
        assert set(node.get("required", [])) == required
        for alias, field in aliases.items():
            assert node["properties"][alias]["description"] == field.description


def test_enum_values_match_the_models() -> None:
    tier = root_schema(Tenant)["properties"]["spec"]["properties"]["tier"]
    assert tier["enum"] == [t.value for t in Tier]


def test_docs_show_the_tier_numbers() -> None:
    text = DOCS.read_text(encoding="utf-8")
    assert crdgen.DOCS_BEGIN in text and crdgen.DOCS_END in text
    assert "| Limit | starter | professional | business | enterprise |" in text
    row = "| `emails_per_month` | " + " | ".join(f"{TIERS[t].emails_per_month:,}" for t in Tier)
    assert row + " |" in text
    for resource in RESOURCES:
        assert f"## {resource.resource_info.kind}\n" in text
