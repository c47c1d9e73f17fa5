"""What the local authoritative DNS servers (`KnotServer`, `PowerDnsServer`) have in common.

    key = TsigKey.generate("pm-update")
    text = minimal_zone("example.test")            # SOA, NS and the NS host's A record
    wait_authoritative("127.0.0.1", port, "example.test", timeout=10)

Zone texts are plain master-file text with `$ORIGIN` implied by the zone name; `minimal_zone`
writes the smallest valid one so callers only add the records their test cares about.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.tsig

DEFAULT_TSIG_ALGORITHM = "hmac-sha256"


class DnsServerError(RuntimeError):
    """A local DNS server could not be set up, started or stopped."""


@dataclass(frozen=True)
class TsigKey:
    """A TSIG key: `name`, base64 `secret`, `algorithm` as the servers spell it (hmac-sha256)."""

    name: str
    secret: str
    algorithm: str = DEFAULT_TSIG_ALGORITHM

    @classmethod
    def generate(cls, name: str = "pm-update", algorithm: str = DEFAULT_TSIG_ALGORITHM) -> TsigKey:
        return cls(name, base64.b64encode(secrets.token_bytes(32)).decode(), algorithm)

    @property
    def key_name(self) -> dns.name.Name:
        """The key's name as dnspython wants it (`UpdateMessage(keyname=...)`)."""
        return dns.name.from_text(self.name)

    def keyring(self) -> dict[dns.name.Name, dns.tsig.Key]:
        """A dnspython keyring holding this key (for `dns.update.UpdateMessage(keyring=...)`)."""
        key = dns.tsig.Key(self.name, self.secret, self.algorithm)
        return {key.name: key}

    def __repr__(self) -> str:  # never print the secret
        return f"TsigKey(name={self.name!r}, algorithm={self.algorithm!r})"


def normalize_zone(zone: str) -> str:
    """`Example.Test.` → `example.test`; raises ValueError for an empty or invalid name."""
    name = zone.strip().rstrip(".").lower()
    if not name:
        raise ValueError("zone name is empty")
    dns.name.from_text(name)  # raises on labels over 63 bytes etc.
    return name


def minimal_zone(
    zone: str,
    *,
    nameservers: Iterable[str] = ("ns1",),
    address: str = "127.0.0.1",
    ttl: int = 60,
    extra: str = "",
) -> str:
    """Master-file text for `zone`: SOA, NS records, an A record per in-zone NS host, `extra`.

    `nameservers` are labels under the zone (`ns1` → ns1.<zone>) or absolute names ending in a dot.
    """
    origin = normalize_zone(zone) + "."
    lines = [
        f"$ORIGIN {origin}",
        f"$TTL {ttl}",
        f"@ IN SOA ns1.{origin} hostmaster.{origin} 1 3600 600 86400 {ttl}",
    ]
    for ns in nameservers:
        lines.append(f"@ IN NS {ns}")
        if not ns.endswith("."):
            lines.append(f"{ns} IN A {address}")
    if extra:
        lines.append(extra.strip())
    return "\n".join(lines) + "\n"


def answers_authoritatively(host: str, port: int, zone: str, timeout: float = 0.5) -> bool:
    """True when host:port answers the zone's SOA with the AA flag (UDP, no recursion)."""
    query = dns.message.make_query(normalize_zone(zone) + ".", "SOA")
    query.flags &= ~dns.flags.RD
    try:
        response = dns.query.udp(query, host, port=port, timeout=timeout)
    except (OSError, dns.exception.DNSException):
        return False
    return response.rcode() == dns.rcode.NOERROR and bool(response.flags & dns.flags.AA)


def wait_authoritative(
    host: str, port: int, zones: Iterable[str], timeout: float, alive: object = None
) -> None:
    """Poll until every zone answers authoritatively; DnsServerError on timeout.

    `alive` is an optional callable returning False once the server process died (stops early).
    """
    pending = [normalize_zone(z) for z in zones]
    deadline = time.monotonic() + timeout
    while pending:
        if callable(alive) and not alive():
            raise DnsServerError("the DNS server exited while starting")
        pending = [z for z in pending if not answers_authoritatively(host, port, z)]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise DnsServerError(f"zones {pending} not served on {host}:{port} after {timeout}s")
        time.sleep(0.05)
