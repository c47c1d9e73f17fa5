"""A DNS resolver: the system's, or one named by PM_DNS_RESOLVER (the operator's probes, the
sender's relay addresses)."""

from __future__ import annotations

import dns.asyncresolver


def make_resolver(address: str = "", timeout: float = 5.0) -> dns.asyncresolver.Resolver:
    """``""``: the system's resolver; ``ip`` or ``ip:port``: that server only.

    Blocklists such as Spamhaus refuse queries from public resolvers (answering
    127.255.255.254), so production points this at a resolver of its own.
    """
    if not address:
        resolver = dns.asyncresolver.Resolver()
    else:
        resolver = dns.asyncresolver.Resolver(configure=False)
        host, _, port = address.rpartition(":") if address.count(":") == 1 else (address, "", "")
        resolver.nameservers = [host or address]
        if port:
            resolver.port = int(port)
    resolver.timeout = timeout
    resolver.lifetime = timeout
    resolver.cache = None
    return resolver
