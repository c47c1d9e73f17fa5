"""The record builders and the ownership plan: pure functions, no DNS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from penguinmails.api.v1alpha1.sendingdomain import (
    DmarcAlignment,
    DmarcPolicy,
    DmarcSettings,
    SendingDomainSpec,
)
from penguinmails.common.dkim.keys import KeySet
from penguinmails.common.dkim.rotation import RotationPolicy, advance
from penguinmails.operator.dns import base
from penguinmails.operator.dns.records import (
    Record,
    SmtpServerInfo,
    SpfLimitError,
    desired_records,
    dmarc_value,
    effective_dmarc_policy,
    spf_lookups,
    spf_value,
    txt_rdata_text,
    txt_strings,
)

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def spec(**fields: object) -> SendingDomainSpec:
    return SendingDomainSpec.model_validate(
        {"domain": "mail.example.com", "dnsProvider": {"type": "manual"}, **fields}
    )


def test_spf_lists_server_ips_then_includes_then_policy() -> None:
    value = spf_value(["2001:db8::1", "192.0.2.7", "192.0.2.7"], ["_spf.relay.example"], "-all")
    assert value == "v=spf1 ip4:192.0.2.7 ip6:2001:db8::1 include:_spf.relay.example -all"


def test_spf_lookup_limit_counts_nested_includes() -> None:
    chain = {f"n{i}.example": f"v=spf1 include:n{i + 1}.example" for i in range(12)}
    with pytest.raises(SpfLimitError, match="more than 10 DNS lookups"):
        spf_lookups("v=spf1 include:n0.example ~all", chain.get)
    assert spf_lookups("v=spf1 include:n8.example ~all", chain.get) == (5, 1)


def test_spf_void_lookup_limit() -> None:
    record = "v=spf1 include:a.example include:b.example include:c.example ~all"
    with pytest.raises(SpfLimitError, match=r"void lookups \(c\.example"):
        spf_lookups(record, lambda name: None)


def test_ip_mechanisms_cost_no_lookup() -> None:
    assert spf_lookups("v=spf1 ip4:192.0.2.1 ip6:2001:db8::1 -all", lambda n: None) == (0, 0)


def test_long_txt_is_one_record_of_255_byte_strings() -> None:
    value = "v=DKIM1; k=rsa; p=" + "A" * 392  # a 2048-bit key's record is 410 bytes
    parts = txt_strings(value)
    assert [len(p) for p in parts] == [255, 155]
    assert "".join(parts) == value
    assert txt_rdata_text(value).count('"') == 4


def test_dmarc_value_has_alignment_and_report_addresses() -> None:
    value = dmarc_value(
        DmarcPolicy.QUARANTINE,
        subdomain_policy=DmarcPolicy.REJECT,
        alignment=DmarcAlignment.STRICT,
        rua=["a@example.com", "b@example.com"],
        ruf=["f@example.com"],
    )
    assert value == (
        "v=DMARC1; p=quarantine; sp=reject; adkim=s; aspf=s; "
        "rua=mailto:a@example.com,mailto:b@example.com; ruf=mailto:f@example.com"
    )


def test_dmarc_rollout_tightens_with_time_since_first_verification() -> None:
    settings = DmarcSettings.model_validate(
        {
            "policy": "none",
            "rollout": [
                {"policy": "quarantine", "after": "336h"},
                {"policy": "reject", "after": "720h"},
            ],
        }
    )
    assert effective_dmarc_policy(settings, None, NOW) == DmarcPolicy.NONE
    assert effective_dmarc_policy(settings, NOW - timedelta(days=1), NOW) == DmarcPolicy.NONE
    assert effective_dmarc_policy(settings, NOW - timedelta(days=15), NOW) == DmarcPolicy.QUARANTINE
    assert effective_dmarc_policy(settings, NOW - timedelta(days=31), NOW) == DmarcPolicy.REJECT


def new_keys() -> KeySet:
    policy = RotationPolicy(
        ("rsa2048", "ed25519"), "pm", timedelta(days=90), timedelta(days=7), timedelta(seconds=300)
    )
    return advance(KeySet(), policy, now=NOW, verified=())[0]


def test_desired_records_cover_every_enabled_feature() -> None:
    domain_spec = spec(
        returnPath={"enabled": True},
        mtaSts={"enabled": True},
        tlsRpt={"enabled": True, "rua": ["tls@example.com"]},
    )
    records = desired_records(
        domain_spec,
        keys=new_keys().keys,
        servers=[SmtpServerInfo("smtp1.example.net", "192.0.2.10")],
        dmarc_policy=DmarcPolicy.NONE,
        ttl=300,
    )
    by_purpose = {(r.purpose, r.name, r.type) for r in records}
    assert ("spf", "mail.example.com", "TXT") in by_purpose
    assert ("dmarc", "_dmarc.mail.example.com", "TXT") in by_purpose
    assert ("mx", "mail.example.com", "MX") in by_purpose
    assert ("returnPath", "bounces.mail.example.com", "TXT") in by_purpose
    assert ("mtaSts", "_mta-sts.mail.example.com", "TXT") in by_purpose
    assert ("tlsRpt", "_smtp._tls.mail.example.com", "TXT") in by_purpose
    dkim = [r for r in records if r.purpose == "dkim"]
    assert len(dkim) == 2
    assert all(r.name.endswith("._domainkey.mail.example.com") for r in dkim)
    spf = next(r for r in records if r.purpose == "spf")
    assert "ip4:192.0.2.10" in spf.value
    mx = next(r for r in records if r.purpose == "mx")
    assert mx.value == "10 smtp1.example.net"


OWNER = "tenant-a/main"


def existing(*records: Record) -> dict[tuple[str, str], dict[str, str]]:
    result: dict[tuple[str, str], dict[str, str]] = {}
    for record in records:
        result.setdefault((record.name, record.type), {})[record.value] = record.value
    return result


def test_plan_adds_missing_records_with_ownership_markers() -> None:
    spf = Record("example.com", "TXT", "v=spf1 -all")
    changes = base.plan([spf], {}, OWNER)
    assert [(c.action, c.record.name) for c in changes] == [
        ("add", "example.com"),
        ("add", "_pm-owner.example.com"),
    ]


def test_plan_never_touches_foreign_records() -> None:
    ours_old = Record("example.com", "TXT", "v=spf1 ip4:192.0.2.1 -all")
    ours_new = Record("example.com", "TXT", "v=spf1 ip4:192.0.2.2 -all")
    foreign = Record("example.com", "TXT", "google-site-verification=x")
    foreign_marker = base.marker(foreign, "someone-else/other")
    current = existing(ours_old, base.marker(ours_old, OWNER), foreign, foreign_marker)
    changes = base.plan([ours_new], current, OWNER)
    deleted = {c.record.value for c in changes if c.action == "delete"}
    added = {c.record.value for c in changes if c.action == "add"}
    assert ours_old.value in deleted
    assert foreign.value not in deleted
    assert foreign_marker.value not in deleted
    assert ours_new.value in added


def test_plan_with_nothing_desired_removes_exactly_what_we_own() -> None:
    ours = Record("_dmarc.example.com", "TXT", "v=DMARC1; p=none")
    foreign = Record("_dmarc.example.com", "TXT", "v=DMARC1; p=reject")
    current = existing(ours, base.marker(ours, OWNER), foreign)
    changes = base.plan([], current, OWNER, ["_dmarc.example.com"])
    assert {c.record.value for c in changes} == {ours.value, base.marker(ours, OWNER).value}
    assert all(c.action == "delete" for c in changes)


def test_plan_is_empty_when_everything_is_in_place() -> None:
    ours = Record("example.com", "MX", "10 mx.example.net")
    current = existing(Record("example.com", "MX", "10 mx.example.net"), base.marker(ours, OWNER))
    assert base.plan([ours], current, OWNER) == []


OURS_SPF = Record(
    "example.com", "TXT", "v=spf1 ip4:192.0.2.1 include:relay.example ~all", 300, "spf"
)


def test_is_spf_follows_the_version_rule() -> None:
    assert base.is_spf("v=spf1 -all") and base.is_spf("V=SPF1") and base.is_spf("v=spf1")
    assert not base.is_spf("v=spf10 -all") and not base.is_spf("google-site-verification=x")


def test_foreign_spf_at_our_name_is_a_conflict_naming_both_values() -> None:
    foreign = Record("example.com", "TXT", "v=spf1 ip4:198.51.100.7 -all")
    others = Record("example.com", "TXT", "google-site-verification=x")
    conflicts = base.spf_conflicts([OURS_SPF], existing(foreign, others), OWNER)
    assert conflicts == [base.SpfConflict("example.com", foreign.value, OURS_SPF.value)]
    message = base.spf_conflict_message(conflicts)
    assert f'"{foreign.value}"' in message and f'"{OURS_SPF.value}"' in message
    assert "spec.spf.includes" in message and "RFC 7208" in message


def test_another_owners_spf_is_foreign_too() -> None:
    theirs = Record("example.com", "TXT", "v=spf1 ip4:198.51.100.7 -all")
    current = existing(theirs, base.marker(theirs, "other-ns/other"))
    assert [c.existing for c in base.spf_conflicts([OURS_SPF], current, OWNER)] == [theirs.value]


def test_our_own_spf_old_or_current_is_no_conflict() -> None:
    old = Record("example.com", "TXT", "v=spf1 ip4:192.0.2.9 ~all")
    assert base.spf_conflicts([OURS_SPF], existing(old, base.marker(old, OWNER)), OWNER) == []
    current = existing(OURS_SPF, base.marker(OURS_SPF, OWNER))
    assert base.spf_conflicts([OURS_SPF], current, OWNER) == []


def test_a_foreign_spf_with_exactly_our_value_is_adopted() -> None:
    # Identical to what we want: no second record; plan only adds our marker, so it is ours now.
    current = existing(Record("example.com", "TXT", OURS_SPF.value))
    assert base.spf_conflicts([OURS_SPF], current, OWNER) == []
    changes = base.plan([OURS_SPF], current, OWNER)
    assert [(c.action, c.record) for c in changes] == [("add", base.marker(OURS_SPF, OWNER))]


def test_spf_conflicts_only_look_at_our_spf_names() -> None:
    # The return path has its own SPF record; a foreign SPF elsewhere is none of our business.
    bounce = Record("bounce.example.com", "TXT", "v=spf1 ip4:192.0.2.1 ~all", 300, "returnPath")
    dmarc = Record("_dmarc.example.com", "TXT", "v=DMARC1; p=none")
    current = existing(
        Record("bounce.example.com", "TXT", "v=spf1 -all"),
        Record("other.example.com", "TXT", "v=spf1 -all"),
        Record("_dmarc.example.com", "TXT", "v=spf1 -all"),
    )
    conflicts = base.spf_conflicts([OURS_SPF, bounce, dmarc], current, OWNER)
    assert [(c.name, c.existing) for c in conflicts] == [("bounce.example.com", "v=spf1 -all")]
