"""The sender enforces the platform's egress policy at every relay connection (DNS
rebinding), so its Deployment carries the operator's own settings, never the tenant's."""

from __future__ import annotations

import pytest

from penguinmails.api.v1alpha1.tiers import Tier
from penguinmails.operator import tenant_resources as res


def _env(monkeypatch: pytest.MonkeyPatch, **values: str) -> dict[str, str]:
    for name in ("PM_EGRESS_ALLOW", "PM_CLUSTER_CIDRS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    deployment = res.sender_deployment(
        res.TenantRef(name="acme", uid="0000-uid", tier=Tier.STARTER), image="i", replicas=1
    )
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item["value"] for item in container["env"]}


def test_the_sender_gets_the_operators_egress_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _env(monkeypatch) == {"PM_TENANT": "acme"}  # unset: the sender's defaults (deny)
    assert _env(monkeypatch, PM_EGRESS_ALLOW="10.99.0.0/24", PM_CLUSTER_CIDRS="10.96.0.0/12") == {
        "PM_TENANT": "acme",
        "PM_EGRESS_ALLOW": "10.99.0.0/24",
        "PM_CLUSTER_CIDRS": "10.96.0.0/12",
    }
