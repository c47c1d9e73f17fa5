"""The RFC 2136 provider's UPDATE messages, as they go on the wire: a domain's whole plan (its
records, their ownership markers and the deletes) in one signed message.

The same messages reach a real Knot in tests/integration/test_dns_providers.py
(`test_a_domains_records_arrive_in_one_update_and_drift_is_repaired`).
"""

from __future__ import annotations

import dns.message
import dns.rdataclass
import dns.rdatatype
import dns.update

from penguinmails.devstack.dnszones import TsigKey
from penguinmails.operator.dns import base
from penguinmails.operator.dns.records import Record
from penguinmails.operator.dns.rfc2136 import BATCH, Rfc2136Provider

ZONE = "example.test"
DOMAIN = f"mail.{ZONE}"
OWNER = "tenant-a/mail"
DKIM = "v=DKIM1; k=rsa; p=" + "M" * 392


def records(spf: str = "v=spf1 ip4:192.0.2.1 ~all") -> list[Record]:
    return [
        Record(DOMAIN, "TXT", spf, 60, "spf"),
        Record(DOMAIN, "MX", "10 smtp1.example.net", 60, "mx"),
        Record(f"pm-rsa-1._domainkey.{DOMAIN}", "TXT", DKIM, 60, "dkim"),
        Record(f"_dmarc.{DOMAIN}", "TXT", "v=DMARC1; p=none", 60, "dmarc"),
    ]


def on_the_wire(key: TsigKey, changes: list[base.Change]) -> list[dns.update.UpdateMessage]:
    provider = Rfc2136Provider("127.0.0.1", 53, key.name, key.secret)
    parsed = []
    for update in provider.updates(ZONE, changes):
        message = dns.message.from_wire(update.to_wire(), keyring=key.keyring())
        assert isinstance(message, dns.update.UpdateMessage)
        assert message.had_tsig, "every UPDATE is signed"
        parsed.append(message)
    return parsed


def rrs(message: dns.update.UpdateMessage) -> list[tuple[str, str, str, str]]:
    """(class, name, type, value) of every RR in the update section (class NONE: a delete of
    exactly that RR, RFC 2136 2.5.4; dnspython keeps it in `deleting`)."""
    return sorted(
        (
            dns.rdataclass.to_text(rrset.deleting or rrset.rdclass),
            rrset.name.to_text(omit_final_dot=True),
            dns.rdatatype.to_text(rrset.rdtype),
            rdata.to_text(),
        )
        for rrset in message.update
        for rdata in rrset
    )


def test_a_new_domain_goes_out_as_one_update_with_its_markers() -> None:
    key = TsigKey.generate()
    changes = base.plan(records(), {}, OWNER)
    messages = on_the_wire(key, changes)
    assert len(messages) == 1
    sent = rrs(messages[0])
    assert len(sent) == 8  # four records, four markers
    assert {c for c, *_ in sent} == {"IN"}  # all additions
    markers = [r for r in sent if r[1].startswith("_pm-owner.")]
    assert len(markers) == 4
    assert all(f"owner={OWNER}," in value for *_, value in markers)
    assert messages[0].zone[0].name.to_text() == f"{ZONE}."


def test_drift_repair_and_a_change_share_one_update() -> None:
    """The DKIM record was deleted by hand and the SPF value changed: one message re-adds the
    DKIM record, replaces our SPF (exact delete of the old value, add of the new, same for its
    marker) and leaves the rest alone."""
    key = TsigKey.generate()
    old = records()
    existing: dict[tuple[str, str], dict[str, str]] = {}
    for record in old + [base.marker(r, OWNER) for r in old]:
        if record.purpose == "dkim":
            continue  # deleted outside PenguinMails; its marker is still there
        existing.setdefault((record.name, record.type), {})[record.value] = f'"{record.value}"'
    existing[(DOMAIN, "TXT")]["site-verification=keep-me"] = '"site-verification=keep-me"'
    changes = base.plan(records("v=spf1 ip4:192.0.2.2 ~all"), existing, OWNER)
    messages = on_the_wire(key, changes)
    assert len(messages) == 1
    sent = rrs(messages[0])
    added = [(name, value) for c, name, _, value in sent if c == "IN"]
    deleted = [(name, value) for c, name, _, value in sent if c == "NONE"]
    assert (f"pm-rsa-1._domainkey.{DOMAIN}", f'"{DKIM[:255]}" "{DKIM[255:]}"') in added
    assert (DOMAIN, '"v=spf1 ip4:192.0.2.2 ~all"') in added
    old_marker = base.marker(old[0], OWNER)
    assert sorted(deleted) == sorted(
        [(DOMAIN, '"v=spf1 ip4:192.0.2.1 ~all"'), (old_marker.name, f'"{old_marker.value}"')]
    )
    assert all("keep-me" not in value for *_, value in sent), "foreign records are never touched"
    assert len(sent) == 5  # DKIM re-added; SPF and its marker replaced


def test_only_a_plan_beyond_one_domain_is_split() -> None:
    key = TsigKey.generate()
    many = [
        base.Change("add", Record(f"r{i}.{ZONE}", "TXT", f"value {i}", 60))
        for i in range(BATCH + 1)
    ]
    assert [len(rrs(m)) for m in on_the_wire(key, many)] == [BATCH, 1]


def test_reads_ask_for_mx_only_where_we_publish_mx() -> None:
    """A pass reads every name it may own records at, and their markers: MX only at host names
    (underscore names and DKIM key names never hold our MX), so 7 queries here, not 12."""
    names = base.names_to_read(records())
    asked = sorted((name, rtype) for name in names for rtype in base.types_at(name))
    assert [a for a in asked if a[1] == "MX"] == [(DOMAIN, "MX")]
    assert len(asked) == len(names) + 1 == 7
