"""The operator-wide resync loop (operator/resync_loop.py) with an injected clock, and the
Tenant's pass through it (`TenantController.resync`) with a fake API client and send counter
(the real operator process: tests/integration/test_tenant_resync_loop.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
import pytest
from kopf._core.engines import posting

from penguinmails.operator.clock import FakeClock
from penguinmails.operator.context import Context
from penguinmails.operator.handlers import ObjectLocks
from penguinmails.operator.resync_loop import ResyncLoop
from penguinmails.operator.tenant import Stated, TenantController
from tests.unit.test_tenant_decide import FakeKube, Sends, stated

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
INTERVAL = 60.0
FULL_EVERY = 36000.0


@dataclass
class Recorder:
    clock: FakeClock
    known: dict[str, int]
    calls: list[tuple[str, float]] = field(default_factory=list)

    async def __call__(self, ctx: Context, key: str) -> None:
        self.calls.append((key, self.clock.monotonic()))

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)  # what was started runs now, then time passes
        self.clock.advance(seconds)


def make_loop(keys: list[str]) -> tuple[ResyncLoop, Recorder, FakeClock, ObjectLocks]:
    clock, locks = FakeClock(T0), ObjectLocks()
    recorder = Recorder(clock, dict.fromkeys(keys, 0))
    loop = ResyncLoop(
        kind="Tenant",
        interval=INTERVAL,
        known=recorder.known.keys,
        resync=recorder,
        locks=locks,
        clock=clock,
        sleep=recorder.sleep,
    )
    return loop, recorder, clock, locks


CTX = Context(settings=None, kube=None, db=None)  # type: ignore[arg-type]


def test_a_round_spreads_the_passes_over_the_interval() -> None:
    loop, recorder, clock, _ = make_loop(["a", "b", "c", "d"])
    start = clock.monotonic()

    async def go() -> None:
        assert await loop.round(lambda: CTX) == 4
        assert clock.monotonic() - start == INTERVAL  # the next round starts one interval on
        # A Tenant reconciled meanwhile joins at the next round; one forgotten leaves.
        recorder.known["e"] = 0
        del recorder.known["a"]
        assert await loop.round(lambda: CTX) == 4

    asyncio.run(go())
    offsets = [(key, at - start) for key, at in recorder.calls]
    assert offsets[:4] == [("a", 0.0), ("b", 15.0), ("c", 30.0), ("d", 45.0)]
    assert offsets[4:] == [("b", 60.0), ("c", 75.0), ("d", 90.0), ("e", 105.0)]


def test_an_object_whose_pass_is_running_is_skipped_and_one_forgotten_mid_round_too() -> None:
    loop, recorder, _, locks = make_loop(["a", "b", "c"])

    async def forget_c_after_a(ctx: Context, key: str) -> None:
        await recorder(ctx, key)
        if key == "a":
            del recorder.known["c"]

    loop._resync = forget_c_after_a

    async def go() -> None:
        async with locks.hold("b"):  # a change pass of b holds its lock all round long
            assert await loop.round(lambda: CTX) == 1
        assert await loop.round(lambda: CTX) == 2

    asyncio.run(go())
    assert [key for key, _ in recorder.calls] == ["a", "a", "b"]


def test_the_pass_holds_the_objects_lock() -> None:
    loop, _, _, locks = make_loop(["a"])
    held: list[bool] = []

    async def check(ctx: Context, key: str) -> None:
        held.append(locks.locked(key))

    loop._resync = check
    asyncio.run(loop.round(lambda: CTX))
    assert held == [True]
    assert not locks.locked("a")


# -- the Tenant's pass through the loop --------------------------------------------------


@dataclass
class TenantKube(FakeKube):
    """FakeKube that also answers a read of the Tenant (None: deleted)."""

    tenant: dict[str, Any] | None = None
    reads: list[str] = field(default_factory=list)

    async def get(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        self.reads.append(f"{kind}/{name}")
        return self.tenant


@pytest.fixture
def events() -> Iterator[asyncio.Queue[Any]]:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    posting.settings_var.set(kopf.OperatorSettings())
    posting.event_queue_var.set(queue)
    yield queue


def tenant_raw(uid: str, status: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "penguinmails.io/v1alpha1",
        "kind": "Tenant",
        "metadata": {"name": "acme", "uid": uid, "generation": 1, "annotations": {}},
        "spec": {"tier": "starter", "contactEmail": "ops@acme.example"},
        "status": dict(status),
    }


def rounds(tenants: TenantController, kube: FakeKube, clock: FakeClock, count: int) -> None:
    async def sleep(seconds: float) -> None:
        await asyncio.sleep(0)
        clock.advance(seconds)

    tenants.loop._sleep = sleep
    ctx = Context(settings=None, kube=kube, db=None)  # type: ignore[arg-type]

    async def go() -> None:
        posting.event_queue_loop_var.set(asyncio.get_running_loop())
        for _ in range(count):
            await tenants.loop.round(lambda: ctx)

    asyncio.run(go())


def test_the_tenant_loop_passes_cheaply_then_the_full_net_reads_the_tenant_first(
    events: asyncio.Queue[Any],
) -> None:
    clock, sends, kube = FakeClock(T0), Sends(), TenantKube()
    tenants = TenantController(
        interval=INTERVAL, full_every=FULL_EVERY, clock=clock, count_sends=sends
    )
    # What a change pass of this process stated, and the status it found.
    spec = {"tier": "starter", "contactEmail": "ops@acme.example"}
    tenants.resyncs.record("t-1", _named(stated(), spec))
    tenants.written["t-1"] = {}
    rounds(tenants, kube, clock, 1)
    # Cheap: nothing read, the status written once from what the full pass kept.
    assert kube.reads == [] and kube.requests == [] and len(kube.patches) == 1
    assert kube.stored["tier"] == "starter" and kube.stored["emailsSentThisMonth"] == 0
    sends.count = 3
    rounds(tenants, kube, clock, 2)
    assert kube.reads == [] and kube.requests == []
    assert kube.patches[1:] == [{"emailsSentThisMonth": 3}]  # only what changed, once
    # The net is due: the Tenant is read by name, then a full pass runs (its first request
    # fails here: the fake API server answers nothing else).
    clock.advance(FULL_EVERY)
    kube.tenant = tenant_raw("t-1", kube.stored)
    rounds(tenants, kube, clock, 1)
    assert kube.reads == ["Tenant/acme"] and kube.requests == ["apply Namespace"]


def test_the_tenant_loop_forgets_a_tenant_deleted_meanwhile(events: asyncio.Queue[Any]) -> None:
    clock, kube = FakeClock(T0), TenantKube()
    tenants = TenantController(
        interval=INTERVAL, full_every=FULL_EVERY, clock=clock, count_sends=Sends()
    )
    spec = {"tier": "starter", "contactEmail": "ops@acme.example"}
    tenants.resyncs.record("t-1", _named(stated(), spec))
    tenants.resyncs.record("t-2", _named(stated(), spec))
    tenants.written["t-1"] = tenants.written["t-2"] = {}
    clock.advance(FULL_EVERY)
    # t-1 is gone; t-2's name now belongs to another Tenant (another uid): both forgotten.
    kube.tenant = tenant_raw("t-3", {})
    rounds(tenants, kube, clock, 1)
    kube.tenant = None
    assert tenants.resyncs.applied == {} and tenants.written == {}
    assert kube.reads == ["Tenant/acme", "Tenant/acme"] and kube.requests == []
    rounds(tenants, kube, clock, 1)
    assert len(kube.reads) == 2  # nothing left to resync
    assert not tenants.locks.locked("t-1")


def _named(base: Stated, spec: dict[str, Any]) -> Stated:
    return dataclasses.replace(base, name="acme", spec=spec)


def test_after_a_failed_change_the_loop_passes_in_full_not_from_the_state_before(
    events: asyncio.Queue[Any],
) -> None:
    clock, sends, kube = FakeClock(T0), Sends(), TenantKube()
    tenants = TenantController(
        interval=INTERVAL, full_every=FULL_EVERY, clock=clock, count_sends=sends
    )
    spec = {"tier": "starter", "contactEmail": "ops@acme.example"}
    tenants.resyncs.record("t-1", _named(stated(), spec))
    tenants.written["t-1"] = {}
    kube.tenant = tenant_raw("t-1", {})

    async def change() -> None:
        posting.event_queue_loop_var.set(asyncio.get_running_loop())
        ctx = Context(settings=None, kube=kube, db=None)  # type: ignore[arg-type]
        obj = kopf.Body(tenant_raw("t-1", {}))  # type: ignore[arg-type]
        with pytest.raises(kopf.TemporaryError):
            await tenants.run(ctx, obj, retry=0, logger=logging.getLogger("test"), timer=False)

    asyncio.run(change())  # the fake API server fails the change's first request
    assert kube.requests == ["apply Namespace"]
    failed = next(c for c in kube.stored["conditions"] if c["type"] == "Ready")
    assert (failed["status"], failed["reason"]) == ("False", "Unreachable")
    # The loop's next pass, once the backoff is over, is full (the Tenant read first), and
    # Ready stays what the failure said rather than a cheap pass's "Reconciled".
    clock.advance(10)
    rounds(tenants, kube, clock, 1)
    assert kube.reads == ["Tenant/acme"] and kube.requests == ["apply Namespace"] * 2
    ready = next(c for c in kube.stored["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Unreachable")
