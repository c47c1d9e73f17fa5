"""DNS blocklists: is the server's IP (or hostname) listed, and what does the listing mean?

A lookup is an A query of ``<reversed ip>.<zone>`` (or ``<domain>.<zone>`` for domain lists):
NXDOMAIN means not listed, an answer in 127.0.0.0/8 means listed with that return code. Spamhaus
answers 127.255.255.252/254/255 when it refuses the query (a typo in the zone, a public resolver,
too many queries): those say nothing about the IP and are reported as "unknown", never "listed".

Spamhaus' Data Query Service (DQS) serves the same lists to any resolver, public ones included,
under ``<key>.<list>.dq.spamhaus.net``. With a DQS key configured, the ``*.spamhaus.org`` lists
are queried there instead; the key is part of the queried name only, never of a zone name shown
in a status, an event or a log (``Blocklist.name``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import dns.asyncresolver
import dns.exception
import dns.resolver
import dns.reversename


class Listing(StrEnum):
    LISTED = "listed"
    NOT_LISTED = "not_listed"
    UNKNOWN = "unknown"


# Return codes documented by Spamhaus (ZEN for IPs, DBL for domains).
ZEN_CODES = {
    "127.0.0.2": "SBL (Spamhaus Block List)",
    "127.0.0.3": "SBL CSS (snowshoe spam)",
    "127.0.0.4": "XBL (exploited host)",
    "127.0.0.5": "XBL (exploited host)",
    "127.0.0.6": "XBL (exploited host)",
    "127.0.0.7": "XBL (exploited host)",
    "127.0.0.9": "SBL DROP (hijacked netblock)",
    "127.0.0.10": "PBL (ISP policy: not a mail server)",
    "127.0.0.11": "PBL (Spamhaus policy: not a mail server)",
}
DBL_CODES = {
    "127.0.1.2": "spam domain",
    "127.0.1.4": "phishing domain",
    "127.0.1.5": "malware domain",
    "127.0.1.6": "botnet C&C domain",
    "127.0.1.102": "abused legit spam",
    "127.0.1.103": "abused spammed redirector",
    "127.0.1.104": "abused legit phish",
    "127.0.1.105": "abused legit malware",
    "127.0.1.106": "abused legit botnet C&C",
}
ERROR_CODES = {
    "127.255.255.252": "typo in the blocklist zone name",
    "127.255.255.254": "query through a public resolver (use your own: PM_DNS_RESOLVER)",
    "127.255.255.255": "too many queries (rate limited)",
}
_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


SPAMHAUS_PUBLIC_SUFFIX = ".spamhaus.org"
SPAMHAUS_DQS_SUFFIX = ".dq.spamhaus.net"


@dataclass(frozen=True)
class Blocklist:
    """One list: the zone shown to people, and the zone queried (which may hold a secret)."""

    name: str
    query_zone: str = field(default="", repr=False)

    @property
    def zone(self) -> str:
        return self.query_zone or self.name


def blocklists(zones: Sequence[str], dqs_key: str = "") -> tuple[Blocklist, ...]:
    """The configured zones; with a DQS key, Spamhaus' public zones become their DQS zones
    (zen.spamhaus.org -> <key>.zen.dq.spamhaus.net, shown as zen.dq.spamhaus.net)."""
    lists = []
    for zone in zones:
        zone = zone.strip().rstrip(".").lower()
        if dqs_key and zone.endswith(SPAMHAUS_PUBLIC_SUFFIX):
            shown = zone.removesuffix(SPAMHAUS_PUBLIC_SUFFIX) + SPAMHAUS_DQS_SUFFIX
            lists.append(Blocklist(shown, f"{dqs_key}.{shown}"))
        elif zone:
            lists.append(Blocklist(zone))
    return tuple(lists)


@dataclass(frozen=True)
class ListingResult:
    zone: str
    status: Listing
    codes: list[str] = field(default_factory=list)
    meanings: list[str] = field(default_factory=list)
    detail: str = ""

    def describe(self) -> str:
        if self.status is Listing.LISTED:
            pairs = ", ".join(f"{c} {m}" for c, m in zip(self.codes, self.meanings, strict=True))
            return f"{self.zone}: listed ({pairs})"
        if self.status is Listing.UNKNOWN:
            return f"{self.zone}: unknown ({self.detail})"
        return f"{self.zone}: not listed"


def decode(zone: str, codes: list[str]) -> ListingResult:
    """Classify the A records a blocklist answered with."""
    errors = [ERROR_CODES[c] for c in codes if c in ERROR_CODES]
    if errors:
        return ListingResult(zone, Listing.UNKNOWN, codes, [], "; ".join(errors))
    outside = [c for c in codes if ipaddress.ip_address(c) not in _LOOPBACK]
    if outside:
        # A resolver that rewrites NXDOMAIN into an address would list everybody.
        return ListingResult(
            zone, Listing.UNKNOWN, codes, [], f"answer {', '.join(outside)} is not a listing code"
        )
    # Spamhaus' codes apply to its zones wherever they are served (zen.spamhaus.org, a Data
    # Query Service key's <key>.zen.dq.spamhaus.net, a local mirror): recognised by label.
    labels = zone.lower().split(".")
    table = DBL_CODES if "dbl" in labels else ZEN_CODES if "zen" in labels else {}
    meanings = [table.get(c, "listed") for c in codes]
    return ListingResult(zone, Listing.LISTED, codes, meanings)


async def _lookup(
    resolver: dns.asyncresolver.Resolver, name: str, blocklist: Blocklist
) -> ListingResult:
    shown = blocklist.name
    try:
        answer = await resolver.resolve(f"{name}.{blocklist.zone}", "A", search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return ListingResult(shown, Listing.NOT_LISTED)
    except dns.exception.DNSException as error:
        # Only the type: dnspython's messages name the query, which may hold a DQS key.
        return ListingResult(shown, Listing.UNKNOWN, detail=f"{type(error).__name__}")
    return decode(shown, sorted(r.address for r in answer))


async def check_ip(
    ip: str, lists: Sequence[Blocklist], resolver: dns.asyncresolver.Resolver
) -> list[ListingResult]:
    reversed_ip = dns.reversename.from_address(ip).to_text(omit_final_dot=True)
    label = reversed_ip.removesuffix(".in-addr.arpa").removesuffix(".ip6.arpa")
    return [await _lookup(resolver, label, blocklist) for blocklist in lists]


async def check_domain(
    domain: str, lists: Sequence[Blocklist], resolver: dns.asyncresolver.Resolver
) -> list[ListingResult]:
    return [await _lookup(resolver, domain.rstrip("."), blocklist) for blocklist in lists]
