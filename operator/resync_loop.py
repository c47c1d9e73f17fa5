"""One operator-wide resync loop for a kind, instead of a kopf timer per object.

kopf keeps, for every object that has a timer, its last body (`live_fresh_body`, ~16 KiB for a
Tenant) and a sleeping task (~4 to 6 KiB): two thirds of what the operator held per Tenant
(docs/scaling.md, Memory). A resync that needs only what the controller already remembers of
the object (its uid, name, generation, spec, last status) does not need either: one loop runs
every known object's pass once per `interval`, spread evenly over it (N objects, one every
interval/N seconds, not all at once), under the same per-object lock as the kind's change
handlers (`handlers.ObjectLocks`); an object whose lock is held is skipped for this round,
since the pass holding it states the whole desired state anyway (as the kopf timer did).

Objects join when the controller has reconciled them (kopf's create, update and resume
handlers), and leave when it forgets them; membership is read at each round, so a new object's
first resync comes within two intervals. At most `at_once` passes run at a time: a round that
cannot keep up (a loaded database) stretches rather than piling passes up.

The loop is kind-agnostic (a set of keys, a pass per key) so that other kinds' timers could
join it; only the Tenant uses it (its timer pass is cheap: operator/tenant.py `Resyncs`).
It runs inside kopf (started by a startup handler, stopped at cleanup), so only the replica
holding the leader Lease runs it (operator/leader.py: standbys do not start kopf).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import kopf

from penguinmails.operator.clock import Clock, SystemClock
from penguinmails.operator.context import Context
from penguinmails.operator.handlers import ObjectLocks

log = logging.getLogger(__name__)

PASSES_AT_ONCE = 8
"""Resync passes in flight at once. A cheap Tenant pass is a few database queries; eight
overlap the database's round trips without holding the pool (ten connections) for long."""

Sleep = Callable[[float], Awaitable[None]]
Resync = Callable[[Context, str], Awaitable[None]]
"""One object's resync pass, by key (the caller holds the object's lock)."""


class ResyncLoop:
    def __init__(
        self,
        *,
        kind: str,
        interval: float,
        known: Callable[[], Collection[str]],
        resync: Resync,
        locks: ObjectLocks,
        clock: Clock | None = None,
        sleep: Sleep = asyncio.sleep,
        at_once: int = PASSES_AT_ONCE,
    ) -> None:
        self.kind = kind
        self.interval = interval
        self._known = known
        self._resync = resync
        self._locks = locks
        self._clock: Clock = clock or SystemClock()
        self._sleep = sleep
        self._slots = asyncio.Semaphore(at_once)
        self._context: contextvars.Context | None = None

    def seen_from_kopf(self) -> None:
        """Call from a kopf handler of the kind. kopf posts events (`kopf.info`, `kopf.warn`)
        through context variables it sets only in its per-object tasks, not in a startup
        handler's; the loop's passes run in a copy of the first such context, so the events
        of their condition transitions are posted as a timer's were."""
        if self._context is None:
            self._context = contextvars.copy_context()

    async def run(self, context: Callable[[], Context]) -> None:
        """Rounds until cancelled. `context` is read at each pass (kopf's memo is filled by
        the operator's own startup handler)."""
        while True:
            await self.round(context)

    async def round(self, context: Callable[[], Context]) -> int:
        """One interval: each known object's pass at its slot; the number of passes started."""
        start = self._clock.monotonic()
        keys = list(self._known())
        gap = self.interval / len(keys) if keys else self.interval
        started = 0
        async with asyncio.TaskGroup() as group:
            for index, key in enumerate(keys):
                await self._until(start + index * gap)
                if key not in self._known() or self._locks.locked(key):
                    continue  # forgotten meanwhile, or a pass of it is running
                await self._slots.acquire()
                group.create_task(
                    self._one(context(), key),
                    context=self._context.copy() if self._context is not None else None,
                )
                started += 1
            await self._until(start + self.interval)
        return started

    async def _until(self, deadline: float) -> None:
        delay = deadline - self._clock.monotonic()
        if delay > 0:
            await self._sleep(delay)

    async def _one(self, ctx: Context, key: str) -> None:
        try:
            if self._locks.locked(key):
                return
            async with self._locks.hold(key, yields=True):
                await self._resync(ctx, key)
        except Exception:
            # The pass reports its own failures (status, backoff); this is a bug or a failed
            # read before the pass: logged, and the next round tries again.
            log.exception("%s %s: resync failed", self.kind, key)
        finally:
            self._slots.release()
            if key not in self._known():
                self._locks.forget(key)

    def attach(self, registry: kopf.OperatorRegistry) -> None:
        """Start with the operator (kopf's startup), stop at its cleanup."""
        task_name = f"{self.kind.lower()}_resync_loop"

        @kopf.on.startup(registry=registry, id=f"{task_name}-start")
        async def start(memo: kopf.Memo, **_: Any) -> None:
            setattr(memo, task_name, asyncio.create_task(self.run(lambda: memo.context)))

        @kopf.on.cleanup(registry=registry, id=f"{task_name}-stop")
        async def stop(memo: kopf.Memo, **_: Any) -> None:
            task: asyncio.Task[None] | None = getattr(memo, task_name, None)
            if task is None:
                return
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
