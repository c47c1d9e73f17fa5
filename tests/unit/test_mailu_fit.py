"""Where an in-cluster MailU may run (operator/mailu/fit.py): Pod Security, LimitRange, quota."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from penguinmails.api.v1alpha1.smtpserver import MailuInClusterProvider, SmtpServerSpec
from penguinmails.api.v1alpha1.tiers import TIERS, Tier
from penguinmails.operator import tenant_resources as res
from penguinmails.operator.mailu.fit import (
    MailuRefusedError,
    Usage,
    check,
    deployments_usage,
    mailu_usage,
    sender_usage,
)
from penguinmails.operator.mailu.manifests import Owner, manifests
from penguinmails.operator.mailu.render import MailuSecrets


def mailu(**fields: Any) -> MailuInClusterProvider:
    return MailuInClusterProvider.model_validate(fields)


def tenant_labels(tier: Tier) -> dict[str, str]:
    ref = res.TenantRef("acme", "uid", tier)
    return dict(res.namespace(ref)["metadata"]["labels"])


@pytest.mark.parametrize("tier", [t for t in Tier if TIERS[t].pod_security == "restricted"])
def test_refused_where_restricted_is_enforced_naming_tier_and_fix(tier: Tier) -> None:
    with pytest.raises(MailuRefusedError) as refused:
        check("tenant-acme", tenant_labels(tier), mailu())
    assert refused.value.reason == "PodSecurityRestricted"
    message = refused.value.message
    assert f"tenant-acme (tier {tier.value})" in message and "'restricted'" in message
    assert "business, enterprise" in message and "provider.relay" in message


@pytest.mark.parametrize("tier", [Tier.BUSINESS, Tier.ENTERPRISE])
@pytest.mark.parametrize("replicas", [1, 5])
def test_fits_the_baseline_tiers_with_their_senders_at_maximum(tier: Tier, replicas: int) -> None:
    assert check("tenant-acme", tenant_labels(tier), mailu(replicas=replicas)) is TIERS[tier]


def test_a_namespace_that_is_no_tenants_is_checked_for_pod_security_only() -> None:
    assert check("mail", {}, mailu(replicas=5)) is None
    with pytest.raises(MailuRefusedError):
        check("mail", {"pod-security.kubernetes.io/enforce": "restricted"}, mailu())


def test_usage_counts_every_pod_of_the_rendered_deployments() -> None:
    """fit.py's sums and the manifests it checks agree (same resources, same replicas)."""
    spec = SmtpServerSpec.model_validate(
        {"hostname": "mx.a.example", "provider": {"mailuInCluster": {"replicas": 3}}}
    )
    rendered = manifests(Owner("mx", "ns", "uid"), spec, MailuSecrets("k", "t"))
    live = deployments_usage(m for m in rendered if m["kind"] == "Deployment")
    assert live == mailu_usage(mailu(replicas=3))
    assert live.pods == 8  # three fronts, and one of each of the five others


def test_a_second_mailu_that_would_exceed_the_quota_is_refused_with_the_numbers() -> None:
    labels = tenant_labels(Tier.BUSINESS)
    first = mailu_usage(mailu(replicas=1))
    with pytest.raises(MailuRefusedError) as refused:
        check("tenant-acme", labels, mailu(replicas=1), first)
    assert refused.value.reason == "TierQuotaExceeded"
    message = refused.value.message
    # Observed: one MailU (3 CPU of limits) + 4 senders (4 CPU) + a second MailU (3 CPU).
    need = first.limits_cpu * 2 + sender_usage(TIERS[Tier.BUSINESS]).limits_cpu
    assert need == Decimal(10)
    assert "limits.cpu 10 > 8" in message and "6 pods of other MailUs" in message
    assert "tier business" in message and "spec.provider.mailuInCluster.replicas" in message


def test_usage_adds_up() -> None:
    one = Usage(Decimal(1), Decimal(2), Decimal(3), Decimal(4), 1)
    assert one + one.times(2) == one.times(3)
