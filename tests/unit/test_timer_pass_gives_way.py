"""A timer pass gives way to a change of its object (operator/handlers.py `Turn`,
operator/controller.py `Pass.unless_wanted`): the change takes the object's lock at the timer
pass's next step that may be given up (a read), instead of waiting for the whole pass (a
SendingDomain verifying against a nameserver that does not answer). Writes are never given
up halfway. Table-driven on a kind built on the framework, with fake clients and a fake clock;
each of the timer pass's steps waits for the test to let it go, as a slow step would (the real
operator process: tests/integration/test_rotation_during_verification.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import kopf
import pytest
from kopf._core.engines import posting

from penguinmails.operator import metrics
from penguinmails.operator.clock import FakeClock
from penguinmails.operator.conditions import Observed
from penguinmails.operator.context import Context
from penguinmails.operator.controller import Controller, Pass
from tests.unit.test_controller_framework import T0, DemoSpec, DemoStatus, FakeKube, body

UID = "u-1"
STEPS = (("read", "nameservers"), ("write", "secret"), ("read", "verify"))
"""A SendingDomain pass's shape: reads that may be given up, a write between them."""


@dataclass
class Slow:
    """Each step of a timer pass waits here until the test lets it go."""

    reached: dict[str, asyncio.Event] = field(default_factory=dict)
    go: dict[str, asyncio.Event] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)

    def gate(self, name: str) -> tuple[asyncio.Event, asyncio.Event]:
        reached = self.reached.setdefault(name, asyncio.Event())
        return reached, self.go.setdefault(name, asyncio.Event())

    async def step(self, name: str, timer: bool) -> str:
        if timer:
            reached, go = self.gate(name)
            reached.set()
            try:
                await go.wait()
            except asyncio.CancelledError:
                self.cancelled.append(name)
                raise
        self.done.append(f"{'timer' if timer else 'change'} {name}")
        return name


class Stepped(Controller[DemoSpec, DemoStatus]):
    kind: ClassVar[str] = "Stepped"
    plural: ClassVar[str] = "steppeds"
    spec_model = DemoSpec
    status_model = DemoStatus

    def __init__(self, slow: Slow, *, concurrency: int | None = None) -> None:
        super().__init__(interval=30, clock=FakeClock(T0), concurrency=concurrency)
        self.slow = slow

    async def reconcile(self, run: Pass[DemoSpec, DemoStatus]) -> None:
        for kind, name in STEPS:
            if kind == "read":
                await run.unless_wanted(self.slow.step(name, run.timer))
            else:
                await self.slow.step(name, run.timer)
        who = "timer" if run.timer else "change"
        await run.status.write([Observed("Ready", "True", "Ok", who)])


@pytest.fixture(autouse=True)
def events() -> Iterator[None]:
    posting.settings_var.set(kopf.OperatorSettings())
    posting.event_queue_var.set(asyncio.Queue())
    yield


def yielded() -> float:
    value = metrics.RECONCILE_TOTAL.labels(kind="Stepped", result="yielded")._value.get()
    return float(value)


async def settled(task: asyncio.Task[None], rounds: int = 200) -> bool:
    """Whether `task` ends once everything ready to run has run (no real time passes here:
    every step is in this loop, so a change that is let in ends within a few rounds)."""
    for _ in range(rounds):
        if task.done():
            return True
        await asyncio.sleep(0)
    return task.done()


async def timer_pass(controller: Stepped, ctx: Context) -> None:
    async with controller.locks.hold(UID, yields=True):
        await controller.run(ctx, body(), retry=0, logger=logging.getLogger("t"), timer=True)


async def change_pass(controller: Stepped, ctx: Context) -> None:
    async with controller.locks.hold(UID):
        await controller.run(ctx, body(), retry=0, logger=logging.getLogger("t"), timer=False)


@pytest.mark.parametrize(
    ("change_during", "timer_did", "given_up"),
    [
        pytest.param(
            "nameservers", [], ["nameservers"], id="during a read: given up, the change at once"
        ),
        pytest.param(
            "secret",
            ["timer nameservers", "timer secret"],
            [],
            id="during a write: the write ends, the pass stops before its next read",
        ),
        pytest.param(
            "verify",
            ["timer nameservers", "timer secret"],
            ["verify"],
            id="during the verification: given up, the change at once",
        ),
        pytest.param(
            None,
            ["timer nameservers", "timer secret", "timer verify"],
            [],
            id="no change: the timer pass goes through",
        ),
    ],
)
def test_a_timer_pass_gives_way_to_a_change_at_its_next_read(
    change_during: str | None, timer_did: list[str], given_up: list[str]
) -> None:
    slow = Slow()
    controller, kube = Stepped(slow), FakeKube({}, [])
    before = yielded()

    async def go() -> None:
        posting.event_queue_loop_var.set(asyncio.get_running_loop())
        ctx = Context(settings=None, kube=kube, db=None)  # type: ignore[arg-type]
        timer = asyncio.create_task(timer_pass(controller, ctx))
        for _, name in STEPS:
            reached, release = slow.gate(name)
            await reached.wait()
            if name == change_during:
                change = asyncio.create_task(change_pass(controller, ctx))
                if name == "secret":
                    # A write is not given up: the change waits for it, and only for it.
                    await asyncio.sleep(0)
                    assert not change.done()
                    release.set()
                # The timer pass's reads were never let go: the change got in all the same.
                assert await settled(change), "the change still waits for the timer pass"
                await timer
                return
            release.set()
        await timer

    asyncio.run(go())
    assert [d for d in slow.done if d.startswith("timer")] == timer_did
    assert slow.cancelled == given_up
    changed = change_during is not None
    if changed:
        assert [d for d in slow.done if d.startswith("change")] == [
            f"change {name}" for _, name in STEPS
        ]
    # A pass that gave way wrote nothing, failed nothing: only the pass that ran through did.
    assert [p["conditions"][0]["message"] for p in kube.patches] == [
        "change" if changed else "timer"
    ]
    assert not controller.backoff.waiting(UID)
    assert yielded() - before == (1 if changed else 0)


def test_a_change_pass_does_not_give_way() -> None:
    """The change holds the lock without yielding: a second change waits for the first."""
    slow = Slow()
    controller, kube = Stepped(slow), FakeKube({}, [])

    async def go() -> None:
        posting.event_queue_loop_var.set(asyncio.get_running_loop())
        ctx = Context(settings=None, kube=kube, db=None)  # type: ignore[arg-type]
        async with controller.locks.hold(UID) as first:
            waiting = asyncio.create_task(change_pass(controller, ctx))
            await asyncio.sleep(0)
            assert not first.wanted.is_set() and not waiting.done()
        await waiting

    asyncio.run(go())
    assert slow.done == [f"change {name}" for _, name in STEPS]


def test_a_timer_pass_waiting_for_a_slot_gives_way() -> None:
    """All slots busy (other objects' passes): the timer pass, holding its object's lock while
    it waits for one, lets a change of its object in rather than keep it behind the queue."""
    slow = Slow()
    controller, kube = Stepped(slow, concurrency=1), FakeKube({}, [])
    before = yielded()

    async def go() -> None:
        posting.event_queue_loop_var.set(asyncio.get_running_loop())
        ctx = Context(settings=None, kube=kube, db=None)  # type: ignore[arg-type]
        assert controller._limit is not None
        await controller._limit.acquire(change=True)  # another object's pass holds the slot
        timer = asyncio.create_task(timer_pass(controller, ctx))
        await asyncio.sleep(0)
        assert controller.locks.locked(UID)
        change = asyncio.create_task(change_pass(controller, ctx))
        assert await settled(timer), "the timer pass still waits for a slot"
        controller._limit.release()
        await change

    asyncio.run(go())
    assert slow.done == [f"change {name}" for _, name in STEPS]
    assert yielded() - before == 1
    assert [p["conditions"][0]["message"] for p in kube.patches] == ["change"]
