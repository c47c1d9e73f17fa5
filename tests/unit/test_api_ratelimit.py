"""What a client address is counted as (api/http/ratelimit.py), the tiers' rates, and the
trusted proxies setting's refusal of an entry that is not an address."""

from __future__ import annotations

import pytest

from penguinmails.api.http.ratelimit import rate_limited, source_subject, tier_rate
from penguinmails.api.v1alpha1.tiers import TIERS, Tier
from penguinmails.common.settings import ApiSettings


def test_an_ipv6_client_counts_per_64_and_an_ipv4_one_per_address() -> None:
    assert source_subject("192.0.2.7") == "source:192.0.2.7"
    assert source_subject("::ffff:192.0.2.7") == "source:192.0.2.7"
    first, second = source_subject("2001:db8:1:2::1"), source_subject("2001:db8:1:2:ffff::9")
    assert first == second == "source:2001:db8:1:2::/64"
    assert source_subject("2001:db8:1:3::1") != first


def test_a_name_that_is_no_address_is_hashed_not_kept() -> None:
    subject = source_subject("a name\r\nwith text")
    assert subject.startswith("source:x") and "name" not in subject


def test_higher_tiers_get_higher_rates() -> None:
    rates = [tier_rate(600, tier) for tier in Tier]
    assert rates == sorted(rates) and rates[0] == 600
    assert tier_rate(600, Tier.ENTERPRISE) == 600 * TIERS[Tier.ENTERPRISE].api_rate_factor
    assert rates[-1] > rates[0]


def test_only_the_api_is_limited_and_not_stripes_webhook() -> None:
    assert rate_limited("/v1/tenants/{tenant}/campaigns")
    assert not rate_limited("/v1/billing/webhook")
    assert not rate_limited("/u/token") and not rate_limited("/healthz")


def test_trusted_proxies_name_the_variable_when_an_entry_is_no_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PM_STRIPE_API_KEY", raising=False)
    monkeypatch.setenv("PM_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("PM_API_DATABASE_URL", "postgresql://x@127.0.0.1/x")
    monkeypatch.setenv("PM_API_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.7,")
    assert ApiSettings.from_env().trusted_proxies == ("10.0.0.0/8", "192.0.2.7/32")
    assert ApiSettings.from_env().source_requests_per_minute == 6000
    monkeypatch.setenv("PM_API_TRUSTED_PROXIES", "10.0.0.0/8,ingress")
    with pytest.raises(ValueError, match=r"PM_API_TRUSTED_PROXIES: 'ingress' is not an IP"):
        ApiSettings.from_env()
