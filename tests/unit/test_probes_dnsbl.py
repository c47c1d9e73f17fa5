"""Blocklist answers decoded: listing codes named, Spamhaus error answers never "listed"."""

from __future__ import annotations

import pytest

from penguinmails.common.settings import SmtpServerSettings
from penguinmails.operator.probes.dnsbl import Listing, blocklists, decode


def test_zen_codes_are_named() -> None:
    result = decode("zen.spamhaus.org", ["127.0.0.2", "127.0.0.4"])
    assert result.status is Listing.LISTED
    assert result.meanings == ["SBL (Spamhaus Block List)", "XBL (exploited host)"]
    assert "127.0.0.4 XBL" in result.describe()


def test_dbl_codes_are_named() -> None:
    result = decode("dbl.spamhaus.org", ["127.0.1.2"])
    assert result.status is Listing.LISTED and result.meanings == ["spam domain"]


@pytest.mark.parametrize(
    ("code", "why"),
    [
        ("127.255.255.252", "typo"),
        ("127.255.255.254", "public resolver"),
        ("127.255.255.255", "rate limited"),
    ],
)
def test_spamhaus_error_answers_are_unknown_not_listed(code: str, why: str) -> None:
    result = decode("zen.spamhaus.org", [code])
    assert result.status is Listing.UNKNOWN
    assert why in result.detail and "listed (" not in result.describe()


def test_answer_outside_loopback_is_unknown() -> None:
    # A resolver that turns NXDOMAIN into an ad server's address must not list everybody.
    result = decode("bl.spamcop.net", ["203.0.113.7"])
    assert result.status is Listing.UNKNOWN


def test_other_lists_report_their_code() -> None:
    result = decode("b.barracudacentral.org", ["127.0.0.2"])
    assert result.status is Listing.LISTED and result.codes == ["127.0.0.2"]


def test_dqs_key_moves_spamhaus_lists_to_their_dqs_zones_and_stays_out_of_names() -> None:
    lists = blocklists(["zen.spamhaus.org", "bl.spamcop.net", "dbl.spamhaus.org."], "k3y")
    assert [b.name for b in lists] == [
        "zen.dq.spamhaus.net",
        "bl.spamcop.net",
        "dbl.dq.spamhaus.net",
    ]
    assert [b.zone for b in lists] == [
        "k3y.zen.dq.spamhaus.net",
        "bl.spamcop.net",
        "k3y.dbl.dq.spamhaus.net",
    ]
    assert "k3y" not in repr(lists)


def test_without_a_key_the_configured_zones_are_queried_as_they_are() -> None:
    assert [b.zone for b in blocklists(["zen.spamhaus.org", " "])] == ["zen.spamhaus.org"]


def test_settings_never_show_the_dqs_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PM_SPAMHAUS_DQS_KEY", "k3y-secret")
    settings = SmtpServerSettings.from_env()
    assert settings.spamhaus_dqs_key == "k3y-secret" and "k3y-secret" not in repr(settings)
