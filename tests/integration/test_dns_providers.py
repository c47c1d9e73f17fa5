"""Both publishing providers against real servers (Knot via RFC 2136, PowerDNS via its API).

The same scenario runs on each: publish a domain's records next to foreign records at the same
names, verify them on the server, change one, remove everything we own; plus each provider's
failure modes, which must come back as a named reason and never leak a credential.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.update
import pytest

from penguinmails.devstack.dnszones import TsigKey, minimal_zone
from penguinmails.devstack.knot import KnotServer
from penguinmails.devstack.ports import free_port
from penguinmails.devstack.powerdns import PowerDnsServer
from penguinmails.operator.dns import base, in_flight
from penguinmails.operator.dns.base import DnsProvider
from penguinmails.operator.dns.powerdns import PowerDnsProvider
from penguinmails.operator.dns.records import Record
from penguinmails.operator.dns.rfc2136 import Rfc2136Provider
from penguinmails.operator.dns.verify import Nameserver, find_nameservers, verify
from penguinmails.operator.errors import ReconcileError

pytestmark = pytest.mark.integration

ZONE = "providers.test"
DOMAIN = f"mail.{ZONE}"
OWNER = "tenant-a/mail"
FOREIGN = (
    'mail IN TXT "site-verification=keep-me"\nmail IN MX 50 other.example.\n'
    'legacy IN TXT "v=spf1 a mx -all"\n'
)
LONG_DKIM = "v=DKIM1; k=rsa; p=" + "M" * 392
# A zone capped just above its own size: Knot answers REFUSED to an update that would exceed it.
TINY = "tiny.test"
TINY_MAX_BYTES = 600


class SizeLimitedKnot(KnotServer):
    """Knot with `zone-max-size` on some zones.

    Exceeding it is the one refusal Knot gives a correctly signed, ACL-allowed update (REFUSED);
    an ACL that does not cover the key or zone comes back as NOTAUTH/BADKEY (`TSIGRejected`).
    The launcher has no option for it, so the limit is added to the config it writes.
    """

    def __init__(
        self, base_dir: Path, zones: Mapping[str, str], max_bytes: Mapping[str, int]
    ) -> None:
        super().__init__(base_dir, zones=zones)
        self.max_bytes = dict(max_bytes)

    def _write_config(self) -> None:
        super()._write_config()
        text = self.config_path.read_text()
        for zone, size in self.max_bytes.items():
            entry = f"  - domain: {zone}\n    acl: pm_update\n"
            assert entry in text, "the launcher's zone entry changed; update this subclass"
            text = text.replace(entry, f"{entry}    zone-max-size: {size}\n")
        self.config_path.write_text(text)  # same file, so its 0600 mode is kept


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[KnotServer, PowerDnsServer]]:
    zone = {ZONE: minimal_zone(ZONE, extra=FOREIGN)}
    root = tmp_path_factory.mktemp("dns")
    knot_zones = {**zone, TINY: minimal_zone(TINY)}
    with (
        SizeLimitedKnot(root, knot_zones, {TINY: TINY_MAX_BYTES}) as knot,
        PowerDnsServer(root, zones=zone) as pdns,
    ):
        yield knot, pdns


@pytest.fixture(params=["rfc2136", "powerdns"])
async def provider(
    request: pytest.FixtureRequest, servers: tuple[KnotServer, PowerDnsServer]
) -> AsyncIterator[tuple[DnsProvider, int]]:
    knot, pdns = servers
    if request.param == "rfc2136":
        yield Rfc2136Provider(knot.address, knot.port, knot.tsig.name, knot.tsig.secret), knot.port
    else:
        api = PowerDnsProvider(pdns.api_url, pdns.api_key)
        yield api, pdns.port
        await api.close()


def desired(spf: str = "v=spf1 ip4:192.0.2.1 ~all") -> list[Record]:
    return [
        Record(DOMAIN, "TXT", spf, 60, "spf"),
        Record(DOMAIN, "MX", "10 smtp1.example.net", 60, "mx"),
        Record(f"pm-rsa-1._domainkey.{DOMAIN}", "TXT", LONG_DKIM, 60, "dkim"),
        Record(f"_dmarc.{DOMAIN}", "TXT", "v=DMARC1; p=none; adkim=r; aspf=r", 60, "dmarc"),
    ]


async def sync(
    provider: DnsProvider, records: list[Record], known: set[str], zone: str = ZONE
) -> int:
    existing = await provider.read(zone, base.names_to_read(records, known))
    changes = base.plan(records, existing, OWNER, known)
    if changes:
        await provider.apply(zone, changes)
    return len(changes)


async def test_publish_change_and_remove_only_our_records(
    provider: tuple[DnsProvider, int],
) -> None:
    api, port = provider
    nameservers = [Nameserver("ns1", "127.0.0.1")]
    records = desired()
    names = {r.name for r in records}

    assert await sync(api, records, names) > 0
    results = await verify(records, nameservers, port)
    assert all(r.verified for r in results), [r.diff for r in results]
    assert await sync(api, records, names) == 0, "a second pass must change nothing"

    changed = desired("v=spf1 ip4:192.0.2.2 ~all")
    await sync(api, changed, names)
    after = await api.read(ZONE, {DOMAIN})
    assert set(after[(DOMAIN, "TXT")]) == {"v=spf1 ip4:192.0.2.2 ~all", "site-verification=keep-me"}
    assert set(after[(DOMAIN, "MX")]) == {"10 smtp1.example.net", "50 other.example"}

    await sync(api, [], names)
    left = await api.read(ZONE, base.names_to_read(records))
    assert left == {
        (DOMAIN, "TXT"): {
            "site-verification=keep-me": left[(DOMAIN, "TXT")]["site-verification=keep-me"]
        },
        (DOMAIN, "MX"): {"50 other.example": left[(DOMAIN, "MX")]["50 other.example"]},
    }


async def soa_serial(knot: KnotServer, zone: str) -> int:
    query = dns.message.make_query(zone + ".", "SOA")
    response = await dns.asyncquery.tcp(query, knot.address, port=knot.port, timeout=10)
    serial: int = response.answer[0][0].serial
    return serial


async def test_a_domains_records_arrive_in_one_update_and_drift_is_repaired(
    servers: tuple[KnotServer, PowerDnsServer],
) -> None:
    """Knot bumps the zone's serial once per UPDATE it applies: a domain's records and markers
    (and later a repair together with a change) each cost exactly one."""
    knot, _ = servers
    api = Rfc2136Provider(knot.address, knot.port, knot.tsig.name, knot.tsig.secret)
    domain = f"batch.{ZONE}"
    records = [
        Record(domain, "TXT", "v=spf1 ip4:192.0.2.1 ~all", 60, "spf"),
        Record(f"pm-rsa-1._domainkey.{domain}", "TXT", LONG_DKIM, 60, "dkim"),
        Record(f"_dmarc.{domain}", "TXT", "v=DMARC1; p=none", 60, "dmarc"),
    ]
    names = {r.name for r in records}
    serial = await soa_serial(knot, ZONE)
    assert await sync(api, records, names) == 6  # three records, three markers
    assert await soa_serial(knot, ZONE) == serial + 1
    nameservers = [Nameserver("ns1", "127.0.0.1")]
    assert all(r.verified for r in await verify(records, nameservers, knot.port))

    # Someone deletes the DKIM record by hand (its marker stays) ...
    by_hand = dns.update.UpdateMessage(
        ZONE + ".", keyring=knot.tsig.keyring(), keyname=knot.tsig.key_name
    )
    by_hand.delete(f"pm-rsa-1._domainkey.{domain}.", "TXT")
    assert (await dns.asyncquery.tcp(by_hand, knot.address, port=knot.port)).rcode() == 0
    dkim = records[1]
    assert not (await verify([dkim], nameservers, knot.port))[0].verified
    serial = await soa_serial(knot, ZONE)
    # ... and the SPF value changes in the same pass: one UPDATE repairs and changes.
    changed = [Record(domain, "TXT", "v=spf1 ip4:192.0.2.2 ~all", 60, "spf"), *records[1:]]
    assert await sync(api, changed, names) == 5  # DKIM back; SPF and its marker replaced
    assert await soa_serial(knot, ZONE) == serial + 1
    assert all(r.verified for r in await verify(changed, nameservers, knot.port))
    assert await sync(api, changed, names) == 0
    await sync(api, [], names)


async def test_many_queries_at_once_wait_for_a_slot_and_all_verify(
    servers: tuple[KnotServer, PowerDnsServer],
) -> None:
    """Three times the bound of queries to one server at once (many passes' verification):
    some wait for a slot (in_flight), and every record still verifies."""
    knot, _ = servers
    api = Rfc2136Provider(knot.address, knot.port, knot.tsig.name, knot.tsig.secret)
    records = [
        Record(f"many{i}.{ZONE}", "TXT", f"v=spf1 ip4:192.0.2.{i} ~all", 60, "spf")
        for i in range(3 * in_flight.MAX_IN_FLIGHT)
    ]
    await api.apply(ZONE, [base.Change("add", r) for r in records])
    waited = False

    async def watch() -> None:
        nonlocal waited
        while True:
            waited = waited or in_flight.slot(knot.address).locked()
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    try:
        results = await verify(records, [Nameserver("ns1", knot.address)], knot.port)
    finally:
        watcher.cancel()
    assert waited, "the queries never filled the bound"
    assert all(r.verified for r in results), [r.diff for r in results if not r.verified]
    await api.apply(ZONE, [base.Change("delete", r) for r in records])


async def test_foreign_spf_is_seen_through_every_provider(
    provider: tuple[DnsProvider, int],
) -> None:
    api, _ = provider
    ours = Record(f"legacy.{ZONE}", "TXT", "v=spf1 ip4:192.0.2.1 ~all", 60, "spf")
    existing = await api.read(ZONE, base.names_to_read([ours]))
    conflicts = base.spf_conflicts([ours], existing, OWNER)
    assert conflicts == [base.SpfConflict(ours.name, "v=spf1 a mx -all", ours.value)]


async def test_nameservers_are_found_through_the_zone(
    servers: tuple[KnotServer, PowerDnsServer],
) -> None:
    knot, _ = servers
    found = await find_nameservers(ZONE, [(knot.address, knot.port)])
    assert found == [Nameserver(f"ns1.{ZONE}", "127.0.0.1")]
    with pytest.raises(ReconcileError) as raised:
        await find_nameservers("absent.test", [(knot.address, knot.port)], wait=2)
    assert raised.value.reason in ("ZoneNotFound", "DNSServerUnreachable")


async def test_wrong_tsig_secret_is_rejected_by_name(
    servers: tuple[KnotServer, PowerDnsServer],
) -> None:
    knot, _ = servers
    wrong = TsigKey.generate(knot.tsig.name)
    api = Rfc2136Provider(knot.address, knot.port, wrong.name, wrong.secret)
    with pytest.raises(ReconcileError) as raised:
        await api.apply(ZONE, [base.Change("add", Record(DOMAIN, "TXT", "x", 60))])
    assert raised.value.reason == "TSIGRejected"
    assert wrong.secret not in raised.value.message
    assert "x" not in {v for vals in (await api.read(ZONE, {DOMAIN})).values() for v in vals}


async def test_unknown_tsig_key_name_is_rejected(
    servers: tuple[KnotServer, PowerDnsServer],
) -> None:
    knot, _ = servers
    api = Rfc2136Provider(knot.address, knot.port, "nobody", knot.tsig.secret)
    with pytest.raises(ReconcileError) as raised:
        await api.apply(ZONE, [base.Change("add", Record(DOMAIN, "TXT", "x", 60))])
    assert raised.value.reason == "TSIGRejected"


async def test_update_refused_by_the_server_is_named_and_changes_nothing(
    servers: tuple[KnotServer, PowerDnsServer],
) -> None:
    knot, _ = servers
    api = Rfc2136Provider(knot.address, knot.port, knot.tsig.name, knot.tsig.secret)
    spf = Record(f"mail.{TINY}", "TXT", "v=spf1 -all", 60, "spf")
    assert await sync(api, [spf], set(), TINY) == 2  # fits: the record and its marker
    before = await api.read(TINY, base.names_to_read([spf]))

    dkim = Record(f"pm-rsa-1._domainkey.mail.{TINY}", "TXT", LONG_DKIM, 60, "dkim")
    with pytest.raises(ReconcileError) as raised:
        await sync(api, [spf, dkim], set(), TINY)
    error = raised.value
    assert error.reason == "DNSUpdateRefused"
    assert f"zone {TINY} with REFUSED" in error.message
    assert knot.tsig.name in error.message and "maximum size" in error.message
    assert knot.tsig.secret not in error.message
    # One UPDATE is atomic: what was published stays, nothing of the refused batch appeared.
    assert await api.read(TINY, base.names_to_read([spf, dkim])) == before


async def test_unreachable_server_is_named() -> None:
    api = Rfc2136Provider(
        "127.0.0.1", free_port(), "k", base64.b64encode(b"k" * 32).decode(), timeout=1
    )
    with pytest.raises(ReconcileError) as raised:
        await api.apply(ZONE, [base.Change("add", Record(DOMAIN, "TXT", "x", 60))])
    assert raised.value.reason == "DNSServerUnreachable"


async def test_powerdns_wrong_api_key_and_missing_zone(
    servers: tuple[KnotServer, PowerDnsServer],
) -> None:
    _, pdns = servers
    wrong = PowerDnsProvider(pdns.api_url, "not-the-key")
    try:
        with pytest.raises(ReconcileError) as raised:
            await wrong.read(ZONE, {DOMAIN})
        assert raised.value.reason == "InvalidCredentials"
        assert "not-the-key" not in raised.value.message
    finally:
        await wrong.close()
    right = PowerDnsProvider(pdns.api_url, pdns.api_key)
    try:
        with pytest.raises(ReconcileError) as raised:
            await right.read("absent.test", {"absent.test"})
        assert raised.value.reason == "ZoneNotFound"
    finally:
        await right.close()


def test_launchers_keep_secrets_out_of_reprs(servers: tuple[KnotServer, PowerDnsServer]) -> None:
    knot, pdns = servers
    assert knot.tsig.secret not in repr(knot.tsig)
    assert (Path(knot.config_path).stat().st_mode & 0o077) == 0
    assert (Path(pdns.root) / "pdns.conf").stat().st_mode & 0o077 == 0
