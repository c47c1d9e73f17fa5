"""The chart's Argo CD health checks, run in a real Lua 5.1 (Argo CD's gopher-lua speaks 5.1)
against their test cases in Argo CD's own resource_customizations format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lupa.lua51 as lua51  # type: ignore[import-untyped]  # lupa ships no type information
import pytest
import yaml

from penguinmails.api.v1alpha1 import (
    CampaignStatus,
    SendingDomainStatus,
    SmtpServerStatus,
    TenantStatus,
)
from penguinmails.api.v1alpha1.common import StatusModel
from penguinmails.devstack.helm import CHART_DIR

HEALTH_DIR = CHART_DIR / "health"
PRELUDE_END = "-- End of the prelude shared by the four checks"
STATUS_MODELS: dict[str, type[StatusModel]] = {
    "Tenant": TenantStatus,
    "SmtpServer": SmtpServerStatus,
    "SendingDomain": SendingDomainStatus,
    "Campaign": CampaignStatus,
}


def _cases() -> list[Any]:
    cases = []
    for folder in sorted(HEALTH_DIR.iterdir()):
        tests = yaml.safe_load((folder / "health_test.yaml").read_text())["tests"]
        for test in tests:
            cases.append(pytest.param(folder, test, id=f"{folder.name}/{test['inputPath']}"))
    return cases


def _run(script: Path, obj: dict[str, Any]) -> dict[str, str]:
    """What Argo CD does: `obj` as a global table, the script's returned table as the health."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=False)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    health = lua.execute(script.read_text())
    return {key: str(value) for key, value in dict(health).items()}


def test_every_kind_has_a_health_check() -> None:
    kinds = {folder.name for folder in HEALTH_DIR.iterdir()}
    assert kinds == {f"penguinmails.io_{kind}" for kind in STATUS_MODELS}


@pytest.mark.parametrize("folder,test", _cases())
def test_health_check(folder: Path, test: dict[str, Any]) -> None:
    obj = yaml.safe_load((folder / test["inputPath"]).read_text())
    assert _run(folder / "health.lua", obj) == test["healthStatus"]


@pytest.mark.parametrize("folder,test", _cases())
def test_testdata_status_is_what_the_operator_writes(folder: Path, test: dict[str, Any]) -> None:
    """Each test object's status survives the kind's status model unchanged: no misspelt or
    invented field (the models ignore unknown fields, so a round trip would drop it). The model
    may add its defaults (empty lists), which the health checks do not read."""
    obj = yaml.safe_load((folder / test["inputPath"]).read_text())
    assert obj["kind"] == folder.name.removeprefix("penguinmails.io_")
    assert obj["apiVersion"] == "penguinmails.io/v1alpha1"
    if "status" in obj:
        model = STATUS_MODELS[obj["kind"]]
        stored = model.model_validate(obj["status"]).to_k8s()
        assert {key: stored.get(key) for key in obj["status"]} == obj["status"]


def test_each_health_state_is_covered() -> None:
    """Every state Argo CD knows that the checks can return has a test case somewhere."""
    seen = {test.values[1]["healthStatus"]["status"] for test in _cases()}
    assert seen == {"Healthy", "Progressing", "Degraded", "Suspended"}


def test_the_shared_prelude_is_the_same_in_every_check() -> None:
    """argocd-cm holds each check alone, so the shared part is copied; the copies must agree."""
    preludes = {
        folder.name: (folder / "health.lua").read_text().split(PRELUDE_END)[0]
        for folder in HEALTH_DIR.iterdir()
    }
    assert all(PRELUDE_END in (HEALTH_DIR / name / "health.lua").read_text() for name in preludes)
    assert len(set(preludes.values())) == 1, sorted(preludes)
