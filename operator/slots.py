"""At most N passes of a kind at once, changes first.

A controller bounds its passes in flight (the SendingDomain's 16: an operator restart or a bulk
apply would otherwise fire hundreds of DNS queries and updates together). A plain semaphore
serves waiters in arrival order, so a change (a `rotate-dkim`, a spec edit) queued behind a
burst of timer passes of other objects waited for all of them (docs/scaling.md). Here a slot
that frees goes to the longest-waiting change first, and to a timer pass only when no change
waits; within each, arrival order. A freed slot is handed to its waiter directly, so nobody
arriving meanwhile takes it past the queue.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Slots:
    def __init__(self, size: int) -> None:
        self._free = size
        self._changes: deque[asyncio.Future[None]] = deque()
        self._timers: deque[asyncio.Future[None]] = deque()

    async def acquire(self, *, change: bool) -> None:
        """Wait for a slot (`change`: before every timer pass that waits)."""
        if self._free > 0:  # free slots mean nobody waits: each release hands its slot over
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._changes if change else self._timers
        queue.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot just as it was cancelled: pass it on
            else:
                queue.remove(waiter)
            raise

    def release(self) -> None:
        for queue in (self._changes, self._timers):
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return
        self._free += 1
