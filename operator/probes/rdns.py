"""Forward-confirmed reverse DNS: the IP's PTR names the hostname, which resolves to the IP.

Receivers (Gmail, Yahoo, Microsoft) reject or junk mail from an IP without it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import dns.asyncresolver
import dns.exception
import dns.resolver
import dns.reversename


@dataclass(frozen=True)
class ReverseDnsResult:
    ip: str
    hostname: str
    ptr_names: list[str] = field(default_factory=list)
    forward: dict[str, list[str]] = field(default_factory=dict)
    """Addresses each PTR name resolves to."""
    error: str | None = None
    """A lookup failure (timeout, server failure): the check could not be made."""

    @property
    def confirmed(self) -> bool:
        """The PTR names the expected hostname and that name resolves back to the IP."""
        return self.hostname in self.ptr_names and self.ip in self.forward.get(self.hostname, [])

    @property
    def message(self) -> str:
        if self.error:
            return f"could not check reverse DNS of {self.ip}: {self.error}"
        if not self.ptr_names:
            return f"{self.ip} has no PTR record: publish one naming {self.hostname}"
        if self.hostname not in self.ptr_names:
            return (
                f"the PTR of {self.ip} names {', '.join(self.ptr_names)}, not {self.hostname}: "
                "set the reverse DNS to spec.hostname"
            )
        addresses = self.forward.get(self.hostname, [])
        if self.ip not in addresses:
            found = ", ".join(addresses) or "no address"
            return (
                f"the PTR of {self.ip} names {self.hostname}, but {self.hostname} resolves to "
                f"{found}: add an A/AAAA record {self.hostname} -> {self.ip}"
            )
        return f"{self.ip} -> {self.hostname} -> {self.ip}"


def _name(text: str) -> str:
    return text.rstrip(".").lower()


async def _addresses(resolver: dns.asyncresolver.Resolver, name: str, ip: str) -> list[str]:
    rdtype = "AAAA" if ipaddress.ip_address(ip).version == 6 else "A"
    try:
        answer = await resolver.resolve(name, rdtype, search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    return sorted(str(ipaddress.ip_address(r.address)) for r in answer)


async def check_fcrdns(
    ip: str, hostname: str, resolver: dns.asyncresolver.Resolver
) -> ReverseDnsResult:
    ip = str(ipaddress.ip_address(ip))
    hostname = _name(hostname)
    try:
        try:
            answer = await resolver.resolve(dns.reversename.from_address(ip), "PTR", search=False)
            names = sorted({_name(r.target.to_text()) for r in answer})
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            names = []
        forward = {name: await _addresses(resolver, name, ip) for name in names}
    except dns.exception.DNSException as error:
        return ReverseDnsResult(ip, hostname, error=f"{type(error).__name__}: {error}")
    return ReverseDnsResult(ip, hostname, names, forward)
