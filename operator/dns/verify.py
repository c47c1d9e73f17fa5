"""Verification: every record, on every authoritative nameserver of the zone, queried directly.

The zone's NS names and their addresses come from the configured resolvers; each nameserver is
then asked without recursion (RD clear) and must answer authoritatively (AA set). A record is
verified when every nameserver serves its exact value; otherwise `diff` says what they answered.

A nameserver is a name with one address or more (A and AAAA). It is checked through the
addresses that answer: an address this cluster cannot reach (IPv6 from an IPv4-only cluster, the
common case) is not a nameserver that fails to serve the record, so it is left out when another
address of the same name answered, and a name none of whose addresses is routable from here is
left out when another name could be checked.
"""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncquery
import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.resolver

from penguinmails.operator.dns import in_flight
from penguinmails.operator.dns.base import Existing
from penguinmails.operator.dns.records import Record, normalize_value
from penguinmails.operator.dns.rfc2136 import rdata_value
from penguinmails.operator.errors import ReconcileError


@dataclass(frozen=True)
class Nameserver:
    name: str
    address: str


@dataclass(frozen=True)
class Verification:
    record: Record
    verified: bool
    diff: str | None


def resolver_for(
    resolvers: Sequence[tuple[str, int]], timeout: float
) -> dns.asyncresolver.Resolver:
    """The system's resolver when `resolvers` is empty, else those servers (PM_DNS_RESOLVER)."""
    if not resolvers:
        resolver = dns.asyncresolver.Resolver()
    else:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [host for host, _ in resolvers]
        resolver.port = resolvers[0][1]
    resolver.lifetime = timeout
    resolver.cache = None
    return resolver


# zone → (when looked up, nameservers): many domains share a zone, and NS sets change rarely.
_NS_CACHE: dict[tuple[str, tuple[tuple[str, int], ...]], tuple[float, list[Nameserver]]] = {}
NS_CACHE_SECONDS = 60.0


async def find_nameservers(
    zone: str, resolvers: Sequence[tuple[str, int]], wait: float = 5.0
) -> list[Nameserver]:
    """The zone's authoritative nameservers (every address of every NS name), sorted.

    Answers are cached for a minute per zone, so a thousand domains in one zone cost one lookup.
    """
    key = (zone, tuple(resolvers))
    cached = _NS_CACHE.get(key)
    if cached is not None and time.monotonic() - cached[0] < NS_CACHE_SECONDS:
        return cached[1]
    servers = await _lookup_nameservers(zone, resolvers, wait)
    _NS_CACHE[key] = (time.monotonic(), servers)
    return servers


async def _lookup_nameservers(
    zone: str, resolvers: Sequence[tuple[str, int]], wait: float
) -> list[Nameserver]:
    resolver = resolver_for(resolvers, wait)
    try:
        answer = await resolver.resolve(zone + ".", "NS")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        raise ReconcileError(
            "ZoneNotFound",
            f"zone {zone} has no NS records: it is not delegated or not served; fix spec.zone "
            "or create the zone",
        ) from None
    except dns.exception.DNSException as error:
        raise ReconcileError(
            "DNSServerUnreachable",
            f"could not look up the nameservers of {zone} ({type(error).__name__}); "
            "check the operator's DNS resolvers (PM_DNS_RESOLVER)",
        ) from None
    servers: list[Nameserver] = []
    for rdata in answer:
        host = str(rdata.target).rstrip(".").lower()
        for rtype in ("A", "AAAA"):
            try:
                addresses = await resolver.resolve(host + ".", rtype)
            except dns.exception.DNSException:
                continue
            servers += [Nameserver(host, str(a)) for a in addresses]
    if not servers:
        raise ReconcileError(
            "ZoneNotFound",
            f"the nameservers of {zone} have no addresses; fix their A/AAAA records",
        )
    return sorted(set(servers), key=lambda s: (s.name, s.address))


# The operating system's word for "this address family or network cannot be reached from here".
_UNROUTABLE = frozenset(
    {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL}
)


@dataclass(frozen=True)
class _Answer:
    values: set[str] | None
    """What the nameserver serves; None when it gave no authoritative answer."""
    why: str = ""
    unroutable: bool = False
    """The address cannot be reached from here at all (no route, no such address family)."""


async def _ask(server: Nameserver, port: int, name: str, rtype: str, wait: float) -> _Answer:
    query = dns.message.make_query(name + ".", rtype)
    query.flags &= ~dns.flags.RD
    try:
        async with in_flight.slot(server.address):
            try:
                response = await dns.asyncquery.udp(
                    query, server.address, port=port, timeout=wait / 2
                )
            except dns.exception.Timeout:
                # A lost datagram under load is not a missing record: ask again over TCP.
                response = await dns.asyncquery.tcp(query, server.address, port=port, timeout=wait)
            if response.flags & dns.flags.TC:
                response = await dns.asyncquery.tcp(query, server.address, port=port, timeout=wait)
    except (OSError, dns.exception.DNSException) as error:
        unroutable = isinstance(error, OSError) and error.errno in _UNROUTABLE
        why = f"{server.name} ({server.address}) did not answer ({type(error).__name__})"
        return _Answer(None, why, unroutable)
    if not response.flags & dns.flags.AA:
        return _Answer(None, f"{server.name} is not authoritative for {name}")
    rcode = response.rcode()
    if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        return _Answer(None, f"{server.name} answered {dns.rcode.to_text(rcode)}")
    wanted = dns.rdatatype.from_text(rtype)
    values = {
        rdata_value(rdata) for rrset in response.answer if rrset.rdtype == wanted for rdata in rrset
    }
    return _Answer(values)


async def served(
    names: Sequence[str],
    rtype: str,
    nameservers: Sequence[Nameserver],
    port: int = 53,
    wait: float = 5.0,
) -> Existing:
    """Every value any nameserver serves at `names`, shaped like a provider's `read`.

    For providers that cannot list records (manual): a nameserver that does not answer is left
    out here, since verification reports it anyway.
    """
    asks = [(ns, name) for ns in nameservers for name in sorted(set(names))]
    answers = await asyncio.gather(*(_ask(ns, port, name, rtype, wait) for ns, name in asks))
    existing: dict[tuple[str, str], dict[str, str]] = {}
    for (_, name), answer in zip(asks, answers, strict=True):
        for value in answer.values or ():
            existing.setdefault((name, rtype), {})[value] = value
    return existing


async def verify(
    records: Sequence[Record],
    nameservers: Sequence[Nameserver],
    port: int = 53,
    wait: float = 5.0,
) -> list[Verification]:
    """Check every record on every nameserver; one query per (name, type, nameserver)."""
    questions = sorted({(r.name, r.type) for r in records})
    asks = [(ns, name, rtype) for ns in nameservers for name, rtype in questions]
    answers = await asyncio.gather(*(_ask(ns, port, n, t, wait) for ns, n, t in asks))
    # question -> nameserver name -> (address, answer) for each of its addresses
    by_question: dict[tuple[str, str], dict[str, list[tuple[str, _Answer]]]] = {}
    for (ns, name, rtype), answer in zip(asks, answers, strict=True):
        by_name = by_question.setdefault((name, rtype), {})
        by_name.setdefault(ns.name, []).append((ns.address, answer))
    results = []
    for record in records:
        expected = normalize_value(record.type, record.value)
        problems: list[str] = []
        checked = 0
        by_name = by_question.get((record.name, record.type), {})
        for ns_name, replies in by_name.items():
            answered = [(address, a.values) for address, a in replies if a.values is not None]
            if not answered and all(a.unroutable for _, a in replies):
                continue  # unreachable from this cluster: says nothing about the record
            checked += 1
            if not answered:
                problems += [a.why for _, a in replies if not a.unroutable]
            for address, values in answered:
                if expected not in values:
                    seen = ", ".join(sorted(values)) or "nothing"
                    problems.append(f"{ns_name} ({address}) serves {seen}")
        if not checked and by_name:
            unreachable = [a.why for replies in by_name.values() for _, a in replies]
            problems.append("no nameserver is reachable from here: " + "; ".join(unreachable))
        diff = "; ".join(problems)[:4000] or None
        results.append(Verification(record, not problems and checked > 0, diff))
    return results
