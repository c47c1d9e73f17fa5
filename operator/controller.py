"""One controller framework for the four kinds.

A kind supplies only what is its own: its models, how to observe the world, a pure `decide`
(unit-tested with a fake clock and fake observations) and how to act on a decision. It does so
by subclassing `Controller` and implementing `reconcile` (observe → decide → act, written as
one level-based pass) and `cleanup`. The framework owns, for every kind, the same way:

- attachment to kopf (operator/handlers.py: one function for create, update, resume and a
  resync timer, a cleanup on delete) and the per-object lock shared by all of them;
- parsing the spec into the kind's model: a spec the model refuses makes Ready=False with
  reason `InvalidSpec` and a message naming the field, and is not retried until it changes;
- the one error type (`errors.ReconcileError`: reason, message, transient): a pass that fails
  reports it on the condition of the step it had reached and on Ready (Stalled when it is not
  transient), and backs off exponentially per object;
- the one status writer (operator/status.py): typed status models, a merge patch in which
  removed fields disappear, nothing written when nothing changed;
- events on condition transitions, and only then;
- metrics per controller (operator/metrics.py: passes, their duration, errors by reason, API
  requests by pass);
- the clock (operator/clock.py), injected, so every time-dependent decision can be tested.

The shape follows cert-manager's controllers (a `ProcessItem` per key that reads, decides with
an injected clock, and acts; table-driven tests with fake clients) and crate-operator's shared
sub-handler base (the bookkeeping of every handler in one base class).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar

import kopf
from pydantic import BaseModel, ValidationError

from penguinmails.api.v1alpha1 import API_GROUP, API_VERSION
from penguinmails.operator import conditions, metrics
from penguinmails.operator.clock import Clock, SystemClock
from penguinmails.operator.conditions import READY, Observed
from penguinmails.operator.context import Context
from penguinmails.operator.errors import (
    ReconcileError,
    backoff_seconds,
    describe,
    describe_validation_error,
)
from penguinmails.operator.handlers import ObjectLocks, Turn, register_controller
from penguinmails.operator.slots import Slots
from penguinmails.operator.status import StatusT, StatusWriter, Summary, announce, transitions

WAIT_WORTH_LOGGING = 0.1
"""A change pass that waited this long (seconds) for its object's lock and a slot says so."""

SpecT = TypeVar("SpecT", bound=BaseModel)
T = TypeVar("T")
Logger = logging.Logger | kopf.Logger


class Yielded(Exception):  # noqa: N818 (not an error: the pass gave way)
    """A timer pass stopped because a change of its object came for the object's lock
    (`Pass.unless_wanted`); the change pass states the whole desired state instead."""


async def unless_wanted(turn: Turn | None, step: Coroutine[Any, Any, T], name: str) -> T:
    """`step`, or `Yielded` when a change came for the lock `turn` holds (`Pass.unless_wanted`)."""
    if turn is None or not turn.yields:
        return await step
    if turn.wanted.is_set():
        step.close()
        raise Yielded(name)
    task = asyncio.ensure_future(step)
    wanted = asyncio.ensure_future(turn.wanted.wait())
    try:
        done, _ = await asyncio.wait((task, wanted), return_when=asyncio.FIRST_COMPLETED)
    finally:
        wanted.cancel()
        if not task.done():
            task.cancel()
    if task in done:
        return task.result()  # finished first (or with the change): use what it read
    with contextlib.suppress(asyncio.CancelledError):
        await task  # let its clean-up run (sockets, the in-flight slots) before leaving
    raise Yielded(name)


@dataclass
class _Failures:
    count: int = 0
    not_before: float = 0.0


class Backoff:
    """Exponential backoff per object, on the injected clock. A failed pass delays the next
    timer pass of that object (a change still runs at once: it may be the fix)."""

    def __init__(self, clock: Clock, base: float) -> None:
        self._clock = clock
        self._base = base
        self._objects: dict[str, _Failures] = {}

    def failed(self, uid: str) -> float:
        """Record a failure; the delay before the next try."""
        entry = self._objects.setdefault(uid, _Failures())
        delay = backoff_seconds(entry.count, base=self._base)
        entry.count += 1
        entry.not_before = self._clock.monotonic() + delay
        return delay

    def succeeded(self, uid: str) -> None:
        self._objects.pop(uid, None)

    def waiting(self, uid: str) -> bool:
        entry = self._objects.get(uid)
        return entry is not None and self._clock.monotonic() < entry.not_before

    def failures(self, uid: str) -> int:
        entry = self._objects.get(uid)
        return entry.count if entry else 0


@dataclass
class Pass(Generic[SpecT, StatusT]):
    """One reconcile of one object: what a kind's observe, decide and act work with."""

    ctx: Context
    body: kopf.Body
    spec: SpecT
    status: StatusWriter[StatusT]
    now: datetime
    """The clock's time when the pass started: one time for every decision of the pass."""
    timer: bool
    retry: int
    logger: Logger
    step: str = READY
    """The condition a failure of this pass is reported on (the step it had reached)."""
    depth: str = "change"
    """What kind of pass this is (`Controller.depth`): its label in the metrics."""
    turn: Turn | None = None
    """The pass's turn at the object's lock, when it may give way to a change (a timer pass)."""

    async def unless_wanted(self, step: Coroutine[Any, Any, T]) -> T:
        """Run `step`, one that only reads (DNS queries, say), unless a change of this object
        comes for its lock: then the step is cancelled and the pass stops (`Yielded`), so that
        the change never waits for a timer pass's slow reads. Checked before the step too, so
        a change that came during a step that may not be given up (a write) is let in at the
        next one. A change pass, or a pass without a turn, just runs the step."""
        return await unless_wanted(self.turn, step, self.name)

    @property
    def name(self) -> str:
        return self.status.name

    @property
    def namespace(self) -> str:
        return self.status.namespace or ""

    @property
    def uid(self) -> str:
        return self.status.uid

    @property
    def generation(self) -> int:
        return self.status.generation


class Controller(Generic[SpecT, StatusT]):
    """Base of each kind's controller; see the module's docstring for who does what."""

    kind: ClassVar[str]
    plural: ClassVar[str]
    spec_model: type[SpecT]
    status_model: type[StatusT]
    api_version: ClassVar[str] = f"{API_GROUP}/{API_VERSION}"
    neutral: ClassVar[frozenset[str]] = frozenset()
    """Conditions that describe a state rather than health: their events are Normal."""
    kopf_timer: ClassVar[bool] = True
    """False for a kind resynced by an operator-wide loop (operator/resync_loop.py) rather
    than a kopf timer per object, which keeps each object's body and a task (Tenant)."""

    def __init__(
        self,
        *,
        interval: float,
        backoff_base: float = 2.0,
        clock: Clock | None = None,
        concurrency: int | None = None,
    ) -> None:
        self.interval = interval
        self.clock: Clock = clock or SystemClock()
        self.backoff = Backoff(self.clock, backoff_base)
        self.written: dict[str, dict[str, Any]] = {}
        """The status each object got from this process's last write (by uid)."""
        self.locks = ObjectLocks()
        """One lock per object, shared by its change, timer and delete handlers."""
        self._limit = Slots(concurrency) if concurrency else None

    # -- what a kind supplies ---------------------------------------------------------------

    async def reconcile(self, run: Pass[SpecT, StatusT]) -> None:
        """Observe → decide → act, stating the whole desired state (level-based)."""
        raise NotImplementedError

    async def cleanup(self, ctx: Context, body: kopf.Body, retry: int, logger: Logger) -> None:
        """What must go when the object is deleted (external resources); nothing by default."""

    def due(self, body: kopf.Body, now: datetime) -> bool:
        """Whether a timer tick runs a pass now (a kind with its own schedule says no)."""
        return True

    def skip(self, body: kopf.Body) -> bool:
        """Passes that must not run at all (e.g. while the object is being deleted)."""
        return False

    def depth(self, body: kopf.Body, timer: bool) -> str:
        """The pass's label in the metrics: `change`, or `full` for a timer pass; a kind whose
        resync can trust its last full pass (Tenant) says `cheap` for those."""
        return "full" if timer else "change"

    def summary(self) -> Summary | None:
        """For a kind whose Ready follows from its other conditions (see status.Summary)."""
        return None

    def invalid(self, message: str) -> tuple[list[Observed], dict[str, Any]]:
        """The status of an object whose spec does not parse."""
        return [Observed(READY, "False", "InvalidSpec", message)], {}

    def failure(
        self, run: Pass[SpecT, StatusT], error: ReconcileError, permanent: bool
    ) -> tuple[list[Observed], dict[str, Any]]:
        """The status of a failed pass: the failing step's condition, and Ready."""
        observed = [Observed(READY, "False", error.reason, error.message, permanent=permanent)]
        if run.step != READY:
            observed.insert(0, Observed(run.step, "False", error.reason, error.message))
        return observed, {}

    # -- what the framework does ------------------------------------------------------------

    def writer(self, ctx: Context, body: kopf.Body) -> StatusWriter[StatusT]:
        return StatusWriter(
            ctx.kube,
            api_version=self.api_version,
            plural=self.plural,
            body=body,
            model=self.status_model,
            clock=self.clock,
            written=self.written,
            summary=self.summary(),
        )

    async def run(
        self, ctx: Context, body: kopf.Body, *, retry: int, logger: Logger, timer: bool
    ) -> None:
        """One pass of one object (the caller holds the object's lock)."""
        uid = str(body.metadata.uid)
        if self.skip(body):
            return
        now = self.clock.now()
        if timer and (self.backoff.waiting(uid) or not self.due(body, now)):
            return
        if self._limit is None:
            await self._run(ctx, body, retry=retry, logger=logger, timer=timer, now=now)
            return
        # A timer pass waiting for a slot holds the object's lock: it gives way to a change
        # of its object; and a change waiting for a slot goes before timer passes (Slots).
        asked = time.monotonic()
        try:
            await unless_wanted(
                self.locks.turn(uid) if timer else None, self._limit.acquire(change=not timer), uid
            )
        except Yielded:
            metrics.RECONCILE_TOTAL.labels(kind=self.kind, result="yielded").inc()
            return
        try:
            await self._run(
                ctx,
                body,
                retry=retry,
                logger=logger,
                timer=timer,
                now=now,
                slot_waited=time.monotonic() - asked,
            )
        finally:
            self._limit.release()

    async def _run(
        self,
        ctx: Context,
        body: kopf.Body,
        *,
        retry: int,
        logger: Logger,
        timer: bool,
        now: datetime,
        slot_waited: float = 0.0,
    ) -> None:
        turn = self.locks.turn(str(body.metadata.uid))
        if not timer and turn is not None and turn.waited + slot_waited >= WAIT_WORTH_LOGGING:
            # Where a change's latency goes before its pass starts (docs/scaling.md).
            logger.info(
                "%s %s: change waited %.2f s for the object's lock, %.2f s for a slot",
                self.kind,
                body.metadata.name,
                turn.waited,
                slot_waited,
            )
        writer = self.writer(ctx, body)
        try:
            spec = self.spec_model.model_validate(dict(body.spec))
        except ValidationError as error:
            message = f"{describe_validation_error(error)}; fix the {self.kind}'s spec"
            observed, fields = self.invalid(message)
            metrics.RECONCILE_ERRORS.labels(kind=self.kind, reason="InvalidSpec").inc()
            await writer.write(observed, **fields)
            # Not retried: only a change of the spec can fix it, and a change runs a pass.
            announce(body, transitions(writer.before, writer.current, neutral=self.neutral))
            return
        depth = self.depth(body, timer)
        run: Pass[SpecT, StatusT] = Pass(
            ctx, body, spec, writer, now, timer, retry, logger, depth=depth, turn=turn
        )
        failure: ReconcileError | None = None
        delay = 0.0
        try:
            with metrics.observe(self.kind, depth) as outcome:
                try:
                    await self.reconcile(run)
                except Yielded:
                    # Not a failure: no backoff, no condition; the change pass follows.
                    outcome.result = "yielded"
                    logger.debug("%s %s: timer pass gave way to a change", self.kind, run.name)
                    return
                except Exception as error:
                    failure = describe(error)
                    raise
        except Exception:
            assert failure is not None
            permanent = not failure.transient or failure.reason in conditions.PERMANENT_REASONS
            delay = self.backoff.failed(run.uid)
            metrics.RECONCILE_ERRORS.labels(kind=self.kind, reason=failure.reason).inc()
            logger.warning("%s %s: %s", self.kind, run.name, failure.message)
            observed, fields = self.failure(run, failure, permanent)
            await writer.write(observed, **fields)
            announce(body, transitions(writer.before, writer.current, failure, self.neutral))
            if not timer and not permanent:
                # kopf retries the change after the delay; the timer waits as long.
                raise kopf.TemporaryError(failure.message, delay=delay) from None
            return
        self.backoff.succeeded(run.uid)
        announce(body, transitions(writer.before, writer.current, neutral=self.neutral))

    async def remove(self, ctx: Context, body: kopf.Body, retry: int, logger: Logger) -> None:
        await self.cleanup(ctx, body, retry, logger)
        uid = str(body.metadata.uid)
        self.backoff.succeeded(uid)
        self.written.pop(uid, None)

    def attach(self, registry: kopf.OperatorRegistry) -> None:
        """Register with kopf: changes, resume and the timer run `run`; delete runs `cleanup`."""

        async def changed_or_timer(
            *,
            body: kopf.Body,
            patch: kopf.Patch,
            retry: int,
            memo: kopf.Memo,
            logger: kopf.Logger,
            timer: bool,
        ) -> None:
            await self.run(memo.context, body, retry=retry, logger=logger, timer=timer)

        async def deleted(
            *, body: kopf.Body, retry: int, memo: kopf.Memo, logger: kopf.Logger
        ) -> None:
            await self.remove(memo.context, body, retry, logger)

        register_controller(
            registry,
            plural=self.plural,
            interval=self.interval if self.kopf_timer else None,
            reconcile=changed_or_timer,
            cleanup=deleted,
            locks=self.locks,
        )
