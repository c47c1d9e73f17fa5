"""An existing SMTP relay: nothing to create or delete, only to observe (and probe)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from penguinmails.api.v1alpha1.smtpserver import RelayProvider as RelaySpec
from penguinmails.operator.errors import ReconcileError
from penguinmails.operator.providers.base import External, ServerRef


async def resolve_host(host: str) -> str:
    """The relay's address: the host itself when it is an IP, else its first A/AAAA record."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as error:
        raise ReconcileError(
            "RelayUnresolvable",
            f"spec.provider.relay.host {host} does not resolve ({error}): check the name",
            transient=True,
        ) from error
    return str(infos[0][4][0])


class Relay:
    create_settle_seconds = 0.0  # nothing is created

    def __init__(self, spec: RelaySpec) -> None:
        self._spec = spec

    async def observe(self, ref: ServerRef, provider_id: str | None) -> External | None:
        ip = await resolve_host(self._spec.host)
        return External(
            provider_id=f"{self._spec.host}:{self._spec.port}",
            ready=True,
            state="external",
            ip_address=ip,
        )

    async def create(self, ref: ServerRef) -> None:
        return None

    async def update(self, ref: ServerRef, current: External) -> External:
        return current

    async def delete(self, ref: ServerRef, provider_id: str | None) -> bool:
        return True  # the relay is not ours to remove
