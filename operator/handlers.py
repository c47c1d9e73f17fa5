"""One way to attach a level-based controller to kopf.

Every kind is reconciled the same way: one function serves create, update, resume and a resync
timer (level-based: it states the whole desired state every time), and one cleans up on delete
(kopf adds the finalizer). Controllers differ only in what those two functions do; the
framework every kind is built on (operator/controller.py) attaches itself through here.

kopf runs an object's timer and its change handlers in separate tasks, so without a lock two
passes of one object can overlap (two SendingDomain passes generating keys under the same dated
selector, two SmtpServer passes ordering a server). One lock per object (by uid) serialises the
change handler, the timer and the delete handler; a timer tick that finds a pass running skips,
since the running pass already states the whole desired state; a change that comes while a
timer pass holds the lock makes the timer pass give way at its next step that may be given up
(`Turn`), so a change never waits for a timer pass's slow reads. A kind whose resync needs no
body (the Tenant) has no kopf timer: one operator-wide loop (operator/resync_loop.py) takes the
same locks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import kopf

from penguinmails.api.v1alpha1 import API_GROUP, API_VERSION


class Reconcile(Protocol):
    """`timer` is True for the periodic re-check, False for a change or a restart."""

    async def __call__(
        self,
        *,
        body: kopf.Body,
        patch: kopf.Patch,
        retry: int,
        memo: kopf.Memo,
        logger: kopf.Logger,
        timer: bool,
    ) -> None: ...


class Cleanup(Protocol):
    async def __call__(
        self, *, body: kopf.Body, retry: int, memo: kopf.Memo, logger: kopf.Logger
    ) -> None: ...


class Turn:
    """One holder's turn at an object's lock.

    A timer pass takes its turn `yields=True`: a change (or delete) of the same object that
    comes for the lock meanwhile sets `wanted`, and the timer pass stops at its next step that
    may be given up (`controller.Pass.unless_wanted`): the change pass states the whole
    desired state anyway, so nothing is lost, and the change does not wait for the timer
    pass's slow reads (a SendingDomain's verification against every nameserver)."""

    def __init__(self, *, yields: bool, waited: float = 0.0) -> None:
        self.yields = yields
        self.wanted = asyncio.Event()
        self.waited = waited
        """Seconds the holder waited for the lock (a change behind a pass of the object)."""


class ObjectLocks:
    """One asyncio lock per object uid, dropped when the object's cleanup is done."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._turns: dict[str, Turn] = {}

    def locked(self, uid: str) -> bool:
        lock = self._locks.get(uid)
        return lock is not None and lock.locked()

    def turn(self, uid: str) -> Turn | None:
        """The turn of whoever holds the object's lock now (None: nobody)."""
        return self._turns.get(uid)

    @asynccontextmanager
    async def hold(self, uid: str, *, yields: bool = False) -> AsyncIterator[Turn]:
        """The object's lock. `yields`: this holder (a timer pass) gives way to a holder
        without it that comes meanwhile (see `Turn`)."""
        lock = self._locks.setdefault(uid, asyncio.Lock())
        asked = time.monotonic()
        if not yields:
            holder = self._turns.get(uid)
            if holder is not None and holder.yields:
                holder.wanted.set()
        async with lock:
            turn = Turn(yields=yields, waited=time.monotonic() - asked)
            self._turns[uid] = turn
            try:
                yield turn
            finally:
                if self._turns.get(uid) is turn:
                    del self._turns[uid]

    def forget(self, uid: str) -> None:
        lock = self._locks.get(uid)
        if lock is not None and not lock.locked():
            del self._locks[uid]


def register_controller(
    registry: kopf.OperatorRegistry,
    *,
    plural: str,
    interval: float | None,
    reconcile: Reconcile,
    cleanup: Cleanup,
    locks: ObjectLocks | None = None,
) -> None:
    """Attach `reconcile` (changes, resume, every `interval` seconds) and `cleanup` (delete).

    `interval` None: no kopf timer; the kind resyncs from one operator-wide loop instead
    (operator/resync_loop.py), which takes the same `locks`."""
    resource = (API_GROUP, API_VERSION, plural)
    locks = locks if locks is not None else ObjectLocks()

    @kopf.on.resume(*resource, registry=registry, id=f"{plural}-changed")
    @kopf.on.create(*resource, registry=registry, id=f"{plural}-changed")
    @kopf.on.update(*resource, registry=registry, id=f"{plural}-changed")
    async def changed(
        *,
        body: kopf.Body,
        patch: kopf.Patch,
        memo: kopf.Memo,
        logger: kopf.Logger,
        retry: int = 0,
        **_: Any,
    ) -> None:
        async with locks.hold(str(body.metadata.uid)):
            await reconcile(
                body=body, patch=patch, retry=retry, memo=memo, logger=logger, timer=False
            )

    async def resync(
        *,
        body: kopf.Body,
        patch: kopf.Patch,
        memo: kopf.Memo,
        logger: kopf.Logger,
        retry: int = 0,
        **_: Any,
    ) -> None:
        uid = str(body.metadata.uid)
        if locks.locked(uid):
            return  # a pass of this object is running; the next tick re-checks
        async with locks.hold(uid, yields=True):
            await reconcile(
                body=body, patch=patch, retry=retry, memo=memo, logger=logger, timer=True
            )

    if interval is not None:
        kopf.timer(
            *resource,
            registry=registry,
            id=f"{plural}-resync",
            interval=interval,
            initial_delay=interval,
        )(resync)

    @kopf.on.delete(*resource, registry=registry, id=f"{plural}-deleted")
    async def deleted(
        *, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, retry: int = 0, **_: Any
    ) -> None:
        uid = str(body.metadata.uid)
        async with locks.hold(uid):
            await cleanup(body=body, retry=retry, memo=memo, logger=logger)
        locks.forget(uid)
