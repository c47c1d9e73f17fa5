"""Verification: every record, on every authoritative nameserver of the zone, queried directly.

The zone's NS names and their addresses come from the configured resolvers; each nameserver is
then asked without recursion (RD clear) and must answer authoritatively (AA set). A record is
verified when every nameserver serves its exact value; otherwise `diff` says what they answered.
"""

from __future__ import annotations

import asyncio
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

from penguinmails.operator.dns.base import Existing, ProviderError
from penguinmails.operator.dns.records import Record, normalize_value
from penguinmails.operator.dns.rfc2136 import rdata_value


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
        raise ProviderError(
            "ZoneNotFound",
            f"zone {zone} has no NS records: it is not delegated or not served; fix spec.zone "
            "or create the zone",
        ) from None
    except dns.exception.DNSException as error:
        raise ProviderError(
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
        raise ProviderError(
            "ZoneNotFound",
            f"the nameservers of {zone} have no addresses; fix their A/AAAA records",
        )
    return sorted(set(servers), key=lambda s: (s.name, s.address))


async def _ask(
    server: Nameserver, port: int, name: str, rtype: str, wait: float
) -> tuple[set[str] | None, str]:
    """(values, "") when answered authoritatively; (None, why) otherwise."""
    query = dns.message.make_query(name + ".", rtype)
    query.flags &= ~dns.flags.RD
    try:
        try:
            response = await dns.asyncquery.udp(query, server.address, port=port, timeout=wait / 2)
        except dns.exception.Timeout:
            # A lost datagram under load is not a missing record: ask again over TCP.
            response = await dns.asyncquery.tcp(query, server.address, port=port, timeout=wait)
        if response.flags & dns.flags.TC:
            response = await dns.asyncquery.tcp(query, server.address, port=port, timeout=wait)
    except (OSError, dns.exception.DNSException) as error:
        return None, f"{server.name} did not answer ({type(error).__name__})"
    if not response.flags & dns.flags.AA:
        return None, f"{server.name} is not authoritative for {name}"
    rcode = response.rcode()
    if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        return None, f"{server.name} answered {dns.rcode.to_text(rcode)}"
    wanted = dns.rdatatype.from_text(rtype)
    values = {
        rdata_value(rdata) for rrset in response.answer if rrset.rdtype == wanted for rdata in rrset
    }
    return values, ""


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
    for (_, name), (values, _why) in zip(asks, answers, strict=True):
        for value in values or ():
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
    by_question: dict[tuple[str, str], list[tuple[Nameserver, set[str] | None, str]]] = {}
    for (ns, name, rtype), (values, why) in zip(asks, answers, strict=True):
        by_question.setdefault((name, rtype), []).append((ns, values, why))
    results = []
    for record in records:
        expected = normalize_value(record.type, record.value)
        problems = []
        for ns, values, why in by_question.get((record.name, record.type), []):
            if values is None:
                problems.append(why)
            elif expected not in values:
                seen = ", ".join(sorted(values)) or "nothing"
                problems.append(f"{ns.name} ({ns.address}) serves {seen}")
        diff = "; ".join(problems)[:4000] or None
        results.append(Verification(record, not problems and bool(nameservers), diff))
    return results
