"""A bound on the DNS queries the operator has in flight to one server at a time.

A query's timeout runs from when it is sent. When hundreds of SendingDomain passes (an operator
restart, a bulk apply) each send their reads and verification queries at once, the answers
arrive faster than the one event loop can parse them, and queries time out waiting for the
loop rather than for the server: the pass fails and is retried, doing it all again. Waiting
for a slot is not timed, so with a bound every query sent is read promptly. The bound is per
server address, so that one tenant's unreachable nameserver (each query held for its full
timeout) never delays another tenant's.
"""

from __future__ import annotations

import asyncio
import weakref

MAX_IN_FLIGHT = 32
"""Queries in flight to one server address: on loopback or a LAN a few are already enough to
keep a server busy; far more than one SendingDomain pass sends at once (about ten)."""

_SLOTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Semaphore]] = (
    weakref.WeakKeyDictionary()
)


def slot(address: str) -> asyncio.Semaphore:
    """The semaphore bounding queries to `address` (one per event loop: tests run several)."""
    by_address = _SLOTS.setdefault(asyncio.get_running_loop(), {})
    found = by_address.get(address)
    if found is None:
        found = by_address[address] = asyncio.Semaphore(MAX_IN_FLIGHT)
    return found
