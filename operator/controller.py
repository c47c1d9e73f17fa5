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
import logging
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
from penguinmails.operator.handlers import register_controller
from penguinmails.operator.status import StatusT, StatusWriter, Summary, announce, transitions

SpecT = TypeVar("SpecT", bound=BaseModel)
Logger = logging.Logger | kopf.Logger


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
        self._limit = asyncio.Semaphore(concurrency) if concurrency else None

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
        async with self._limit:
            await self._run(ctx, body, retry=retry, logger=logger, timer=timer, now=now)

    async def _run(
        self,
        ctx: Context,
        body: kopf.Body,
        *,
        retry: int,
        logger: Logger,
        timer: bool,
        now: datetime,
    ) -> None:
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
        run: Pass[SpecT, StatusT] = Pass(ctx, body, spec, writer, now, timer, retry, logger)
        failure: ReconcileError | None = None
        delay = 0.0
        try:
            with metrics.observe(self.kind, "full" if timer else "change"):
                try:
                    await self.reconcile(run)
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
            interval=self.interval,
            reconcile=changed_or_timer,
            cleanup=deleted,
        )
