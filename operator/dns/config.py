"""DNS settings of the operator, from `PM_DNS_*` variables (defaults: the real Internet)."""

from __future__ import annotations

import os
from dataclasses import dataclass


def _servers(raw: str) -> tuple[tuple[str, int], ...]:
    servers = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        host, _, port = item.rpartition(":") if item.count(":") == 1 else (item, "", "53")
        servers.append((host, int(port)))
    return tuple(servers)


@dataclass(frozen=True)
class DnsSettings:
    resolvers: tuple[tuple[str, int], ...]
    """Where zones' NS records and nameserver addresses are looked up: PM_DNS_RESOLVER, the
    same variable the SmtpServer probes read (`ip`, `ip:port`, or a comma-separated list);
    empty: the system resolver."""
    nameserver_port: int
    """Port authoritative nameservers are queried on (PM_DNS_NAMESERVER_PORT, 53)."""
    ttl: int
    """TTL of published records, also the wait before a new DKIM key signs (PM_DNS_TTL_SECONDS)."""
    tick_seconds: float
    """How often each SendingDomain's timer wakes to verify or rotate (PM_DNS_TICK_SECONDS)."""
    timeout: float
    """Timeout of one DNS query or provider call (PM_DNS_TIMEOUT_SECONDS)."""

    @classmethod
    def from_env(cls) -> DnsSettings:
        env = os.environ
        try:
            return cls(
                resolvers=_servers(env.get("PM_DNS_RESOLVER", "")),
                nameserver_port=int(env.get("PM_DNS_NAMESERVER_PORT", "53")),
                ttl=int(env.get("PM_DNS_TTL_SECONDS", "300")),
                tick_seconds=float(env.get("PM_DNS_TICK_SECONDS", "30")),
                timeout=float(env.get("PM_DNS_TIMEOUT_SECONDS", "5")),
            )
        except ValueError as error:
            raise ValueError(
                f"a PM_DNS_* setting is malformed ({error}): PM_DNS_RESOLVER=host:port,..., "
                "the others are numbers"
            ) from error
