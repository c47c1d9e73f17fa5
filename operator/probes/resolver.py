"""The resolver the DNS probes use: the system's, or one named by PM_DNS_RESOLVER."""

from __future__ import annotations

from penguinmails.common.resolver import make_resolver

__all__ = ["make_resolver"]
