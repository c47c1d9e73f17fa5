"""Tenant-supplied addresses: what the platform refuses to connect to, and the error it gives."""

from __future__ import annotations

import ipaddress

import pytest

from penguinmails.api.v1alpha1 import CampaignSpec
from penguinmails.common.egress import DestinationNotAllowedError, EgressPolicy
from penguinmails.operator.campaign import unsubscribe_destination

FIELD = "spec.dnsProvider.powerdns.apiUrl"


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("100.64.0.1", "shared"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 (an address refused, not bound)
        ("224.0.0.1", "multicast"),
        ("localhost", "loopback"),
    ],
)
async def test_refused_with_the_field_and_the_reason(host: str, why: str) -> None:
    with pytest.raises(DestinationNotAllowedError) as caught:
        await EgressPolicy().check(FIELD, host)
    assert caught.value.field == FIELD
    assert caught.value.message.startswith(f"{FIELD}: {host}")
    assert why in caught.value.message and "PM_EGRESS_ALLOW" in caught.value.message


async def test_cluster_ranges_are_refused_even_when_public_and_allowed_networks_pass() -> None:
    cluster = (ipaddress.ip_network("203.0.113.0/24"),)
    with pytest.raises(DestinationNotAllowedError, match="pod or service ranges"):
        await EgressPolicy(cluster=cluster).check(FIELD, "203.0.113.7")
    assert await EgressPolicy().check(FIELD, "93.184.216.34") == ["93.184.216.34"]
    allowed = EgressPolicy(allowed=(ipaddress.ip_network("10.20.0.0/16"),))
    assert await allowed.check(FIELD, "10.20.3.4") == ["10.20.3.4"]
    with pytest.raises(DestinationNotAllowedError):
        await allowed.check(FIELD, "10.21.3.4")


def test_policy_from_env_names_a_bad_cidr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PM_EGRESS_ALLOW", "10.0.0.0/8, 127.0.0.0/8")
    monkeypatch.setenv("PM_CLUSTER_CIDRS", "")
    assert len(EgressPolicy.from_env().allowed) == 2
    monkeypatch.setenv("PM_CLUSTER_CIDRS", "10.96.0.0/12,not-a-cidr")
    with pytest.raises(ValueError, match="PM_CLUSTER_CIDRS: 'not-a-cidr'"):
        EgressPolicy.from_env()


async def test_campaign_unsubscribe_url_inside_is_a_preflight_failure_naming_the_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PM_EGRESS_ALLOW", raising=False)
    monkeypatch.delenv("PM_CLUSTER_CIDRS", raising=False)

    def spec(url: str | None) -> CampaignSpec:
        return CampaignSpec.model_validate(
            {
                "sendingDomainRef": {"name": "acme"},
                "from": {"address": "jane@acme.example"},
                "subject": "Hi",
                "text": "Hello",
                "audience": {"lists": ["leads"]},
                "unsubscribe": {"url": url} if url else {},
            }
        )

    [failure] = await unsubscribe_destination(spec("https://169.254.169.254/latest/u"))
    assert failure.reason == "DestinationNotAllowed"
    assert failure.message.startswith("spec.unsubscribe.url: 169.254.169.254 is a link-local")
    assert await unsubscribe_destination(spec("https://93.184.216.34/u")) == []
    assert await unsubscribe_destination(spec(None)) == []
