"""The contract every SmtpServer provider follows: observe, create, update, delete.

The controller drives each provider the same way, one level-based pass at a time:

1. ``observe`` finds the external resource, by the id recorded in status or, when none is
   recorded yet, by the unique name derived from the SmtpServer's uid;
2. nothing found: unless a create sent earlier is still within ``create_settle_seconds`` (recorded
   in status before the call), ``create`` asks for it (which may return before it exists), then
   observe again;
3. the id of what was found is written to status before anything else is done with it;
4. ``update`` brings it to the spec (reverse DNS, firewall...), idempotently;
5. on deletion, ``delete`` until it reports the resource gone.

Because step 1 looks the resource up by name before step 2 ever runs, a crash anywhere (even
between a successful create and the status write) finds the same resource again on restart
instead of creating a second one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ServerRef:
    """The SmtpServer a provider works for."""

    namespace: str
    name: str
    uid: str
    hostname: str

    @property
    def external_name(self) -> str:
        """A name unique to this object (its uid), so an interrupted create is found again and
        two SmtpServers with the same hostname never share a server."""
        return f"pm-{self.uid.replace('-', '')[:20]}"


@dataclass(frozen=True)
class External:
    """What a provider observed of the resource behind one SmtpServer."""

    provider_id: str
    ready: bool
    """Built and running, with its address known."""
    state: str
    """The provider's own word for its state (pending, active...)."""
    ip_address: str | None = None
    reverse_dns: str | None = None


class Provider(Protocol):
    """One kind of SmtpServer backend. Every method is idempotent."""

    create_settle_seconds: float
    """How long a create may stay unobservable before it may be sent again. Zero when what
    ``create`` makes is observable as soon as it returns; a provider whose listing lags (Hostwinds)
    says how long the controller must keep looking before it can be sure nothing was made."""

    async def observe(self, ref: ServerRef, provider_id: str | None) -> External | None:
        """The resource recorded as ``provider_id``, else the one named for ``ref``; None if
        there is none (or only a terminated one)."""
        ...

    async def create(self, ref: ServerRef) -> None:
        """Ask for the resource; it may not be observable yet when this returns."""
        ...

    async def update(self, ref: ServerRef, current: External) -> External:
        """Bring an existing, ready resource to the spec; returns what it looks like now."""
        ...

    async def delete(self, ref: ServerRef, provider_id: str | None) -> bool:
        """Remove the resource; True once it is confirmed gone."""
        ...
