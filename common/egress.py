"""Addresses a tenant supplies (a PowerDNS API, a DNS server, a relay...) checked before we connect.

Whatever a tenant writes in a spec, the platform connects to it from inside the cluster: without
a check, a tenant could point the operator at the cluster's own services, the node's metadata
endpoint or anything on a private network. `EgressPolicy.check()` resolves the host and refuses
it when any of its addresses is

- loopback, link-local (which includes cloud metadata at 169.254.169.254), unspecified,
  multicast or reserved;
- private (RFC 1918, RFC 4193 unique-local, RFC 6598 shared address space);
- inside the cluster's pod or service ranges (`PM_CLUSTER_CIDRS`, comma-separated);

unless the platform allows that network explicitly (`PM_EGRESS_ALLOW`, comma-separated CIDRs,
e.g. an internal relay network; the local stack and the tests allow 127.0.0.0/8). The error
names the field and the address, never anything secret. The check resolves once: a host whose
DNS answer changes between the check and the connection (DNS rebinding) is only caught if the
connection uses the checked address. The sender does so for relays (sender/smtp.py: it checks
at every new connection and connects to the address it checked); elsewhere prefer IP literals
or names under the platform's control for anything sensitive; network policies (egress rules)
are the second line.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception

__all__ = ["ALLOW_ENV", "CLUSTER_ENV", "DestinationNotAllowedError", "EgressPolicy"]

ALLOW_ENV = "PM_EGRESS_ALLOW"
CLUSTER_ENV = "PM_CLUSTER_CIDRS"

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_SHARED = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598, carrier-grade NAT


class DestinationNotAllowedError(Exception):
    def __init__(self, field: str, host: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.host = host
        self.message = message


def _networks(name: str) -> tuple[IpNetwork, ...]:
    found: list[IpNetwork] = []
    for item in os.environ.get(name, "").split(","):
        if item.strip():
            try:
                found.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                raise ValueError(
                    f"{name}: {item.strip()!r} is not a CIDR like 10.0.0.0/8"
                ) from None
    return tuple(found)


@dataclass(frozen=True)
class EgressPolicy:
    allowed: tuple[IpNetwork, ...] = ()
    cluster: tuple[IpNetwork, ...] = ()

    @classmethod
    def from_env(cls) -> EgressPolicy:
        return cls(allowed=_networks(ALLOW_ENV), cluster=_networks(CLUSTER_ENV))

    def why_denied(self, address: IpAddress) -> str | None:
        """Why tenants may not reach `address`, or None when they may."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.allowed):
            return None
        if any(address in network for network in self.cluster):
            return "inside the cluster's pod or service ranges"
        checks = (
            (address.is_loopback, "a loopback address"),
            (address.is_link_local, "a link-local address (e.g. cloud metadata)"),
            (address.is_unspecified, "an unspecified address"),
            (address.is_multicast, "a multicast address"),
            (address in _SHARED, "a shared (carrier-grade NAT) address"),
            (address.is_private, "a private address"),
            (address.is_reserved, "a reserved address"),
        )
        return next((why for denied, why in checks if denied), None)

    async def check(
        self, field: str, host: str, *, resolver: dns.asyncresolver.Resolver | None = None
    ) -> list[str]:
        """The addresses of `host` if tenants may reach all of them; else the error naming
        `field`. A name that does not resolve is left to the connection to report. Resolved
        by the system, or by `resolver` (its A and AAAA records)."""
        try:
            addresses: list[IpAddress] = [ipaddress.ip_address(host.strip("[]"))]
        except ValueError:
            if resolver is not None:
                addresses = await _resolve(resolver, host)
            else:
                try:
                    infos = await asyncio.get_running_loop().getaddrinfo(
                        host, None, type=socket.SOCK_STREAM
                    )
                except OSError:
                    return []
                addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        for address in addresses:
            why = self.why_denied(address)
            if why is not None:
                shown = host if str(address) == host else f"{host} ({address})"
                raise DestinationNotAllowedError(
                    field,
                    host,
                    f"{field}: {shown} is {why}, which tenants may not use; use a public "
                    f"address, or ask the platform to allow its network ({ALLOW_ENV})",
                )
        return [str(address) for address in addresses]


async def _resolve(resolver: dns.asyncresolver.Resolver, host: str) -> list[IpAddress]:
    found: list[IpAddress] = []
    for rdtype in ("A", "AAAA"):
        try:
            answer = await resolver.resolve(host, rdtype)
        except dns.exception.DNSException:
            continue
        found += [ipaddress.ip_address(record.to_text()) for record in answer]
    return found
