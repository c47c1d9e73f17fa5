"""Fast checks of the Helm chart's files that need no helm binary (those are integration tests)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

from penguinmails.devstack.helm import CHART_DIR, REPO_ROOT

SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())
VALUES = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
CHART = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())


def test_chart_ships_the_generated_crds_themselves() -> None:
    # A symlink, not a copy: `make crds` updates the chart too, and nothing can drift.
    crds = CHART_DIR / "crds"
    assert crds.is_symlink()
    assert crds.resolve() == (REPO_ROOT / "crds").resolve()


def test_app_version_is_the_package_version() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert CHART["appVersion"] == project["version"]


def _undeclared(values: Any, schema: dict[str, Any], path: str) -> list[str]:
    """Keys of `values` that a strict (additionalProperties: false) schema object does not list."""
    if not isinstance(values, dict) or schema.get("type") != "object":
        return []
    properties: dict[str, Any] = schema.get("properties", {})
    missing: list[str] = []
    for key, value in values.items():
        if key in properties:
            missing += _undeclared(value, properties[key], f"{path}.{key}")
        elif schema.get("additionalProperties") is False:
            missing.append(f"{path}.{key}")
    return missing


def test_schema_is_strict_and_declares_every_default() -> None:
    assert SCHEMA["additionalProperties"] is False
    assert not _undeclared(VALUES, SCHEMA, "")
    assert SCHEMA["properties"]["replicas"]["type"] == "integer"
    for section in (
        "image",
        "operator",
        "database",
        "metrics",
        "serviceAccount",
        "rbac",
        "leaderElection",
        "podDisruptionBudget",
        "unsubscribe",
        "intake",
        "api",
        "billing",
    ):
        assert SCHEMA["properties"][section]["additionalProperties"] is False, section
    ingress = SCHEMA["properties"]["unsubscribe"]["properties"]["ingress"]
    assert ingress["additionalProperties"] is False
    assert SCHEMA["properties"]["billing"]["properties"]["stripe"]["additionalProperties"] is False


def test_billing_is_off_and_its_keys_come_only_from_a_secret() -> None:
    assert VALUES["billing"]["stripe"]["secretName"] == ""
    properties = SCHEMA["properties"]["billing"]["properties"]["stripe"]["properties"]
    suspects = {k for k in properties if re.search(r"(?i)password|secret|key", k)}
    assert suspects == {"secretName"}, suspects


def test_the_components_are_off_until_they_can_start() -> None:
    """The unsubscribe endpoint and the intake need PM_SUPPRESSION_KEY, which only the Secret
    named in sender.secretName holds: with its default (empty) neither could start."""
    assert VALUES["sender"]["secretName"] == ""
    for component in ("unsubscribe", "intake"):
        assert VALUES[component]["enabled"] is False, component
        assert VALUES[component]["databaseUrlFrom"] == "sender", component
    assert VALUES["unsubscribe"]["ingress"]["enabled"] is False


def test_the_components_take_secrets_only_from_secrets() -> None:
    """No value of the unsubscribe endpoint or the intake can carry a secret or a URL with one."""
    for component in ("unsubscribe", "intake"):
        properties = SCHEMA["properties"][component]["properties"]
        suspects = {k for k in properties if re.search(r"(?i)password|secret|dsn|key$|url$", k)}
        assert suspects <= {"publicUrl"}, suspects
        # Which Secret the database URL comes from is a choice between two, never a URL.
        assert properties["databaseUrlFrom"]["enum"] == ["sender", "database"]


def test_every_option_in_the_ci_values_is_declared() -> None:
    options = yaml.safe_load((CHART_DIR / "ci" / "all-options-values.yaml").read_text())
    assert not _undeclared(options, SCHEMA, "")


def test_the_database_url_only_comes_from_a_secret() -> None:
    database = SCHEMA["properties"]["database"]
    assert set(database["properties"]) == {"secretName", "secretKey"}
    assert VALUES["database"]["secretName"]


def test_no_helm_template_for_crds() -> None:
    """CRDs ship in crds/ (installed first, never deleted by helm), not as templates."""
    templates = Path(CHART_DIR / "templates")
    for template in templates.glob("*.yaml"):
        assert "CustomResourceDefinition" not in template.read_text(), template.name


def test_the_deployment_sets_every_operator_setting() -> None:
    """A new PM_* setting in common/settings.py must get a chart value (or a decision not to)."""
    sources = ("common/settings.py", "common/egress.py")
    settings = "".join((REPO_ROOT / source).read_text() for source in sources)
    names = set(re.findall(r'"(PM_[A-Z0-9_]+)"', settings))
    # The tenant egress rules (its other PM_* names are Secret keys, not settings).
    egress = (REPO_ROOT / "operator" / "tenant_resources.py").read_text()
    names |= set(re.findall(r'"(PM_TENANT_[A-Z0-9_]+)"', egress))
    # Each setting is set where the process that reads it runs: the operator's Deployment or
    # the API's (billing's webhook settings are the API's alone).
    templates = "".join(
        (CHART_DIR / "templates" / name).read_text() for name in ("deployment.yaml", "api.yaml")
    )
    assert names, "no PM_* settings found"
    # Decided not to: a kubeconfig is how the API runs outside a cluster (in a pod it uses its
    # ServiceAccount's token); the API's token lifetimes, sign-in throttle and rate limits
    # keep their defaults in the chart, whose API Deployment takes no plain values but the
    # egress policy (tests/integration/test_api_resources.py).
    not_in_the_chart = {
        "PM_KUBECONFIG",
        "PM_API_ACCESS_TOKEN_SECONDS",
        "PM_API_REFRESH_TOKEN_DAYS",
        "PM_API_SIGNIN_FAILURES",
        "PM_API_SIGNIN_WINDOW_SECONDS",
        "PM_API_KEY_REQUESTS_PER_MINUTE",
        "PM_API_SOURCE_REQUESTS_PER_MINUTE",
        "PM_API_MAIL_RETRY_SECONDS",
        # Set by the image itself (Dockerfile ENV, dev/images.py): where its build of the
        # dashboard is; not a deployment's choice.
        "PM_DASHBOARD_DIR",
    }
    assert not sorted(n for n in names - not_in_the_chart if f"name: {n}" not in templates)
