"""Which Tenant timer passes may trust the last full pass (tenant.Resyncs), with a fake clock."""

from __future__ import annotations

import uuid
from typing import Any, cast

import kopf

from penguinmails.operator import tenant_resources as res
from penguinmails.operator.tenant import Resyncs, Stated

FULL_EVERY = 36000.0


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def body(generation: int = 3) -> kopf.Body:
    raw: dict[str, Any] = {"metadata": {"uid": "t1", "name": "acme", "generation": generation}}
    return kopf.Body(cast(kopf.RawBody, raw))


STATED = Stated(
    generation=3,
    tenant_id=uuid.UUID(int=1),
    replicas=0,
    placement=res.SenderPlacement(pods=0, unschedulable=2),
)


def test_a_timer_pass_trusts_the_last_full_pass_until_it_is_old() -> None:
    clock = Clock()
    resyncs = Resyncs(FULL_EVERY, clock)
    assert resyncs.cheap(body(), timer=True) is None  # nothing stated yet in this process
    resyncs.record("t1", STATED)
    assert resyncs.cheap(body(), timer=False) is None  # a change is always a full pass
    assert resyncs.cheap(body(generation=4), timer=True) is None  # a change not seen yet
    clock.now += FULL_EVERY - 1
    cheap = resyncs.cheap(body(), timer=True)
    assert cheap is not None and cheap.placement.unschedulable == 2
    clock.now += 1
    assert resyncs.cheap(body(), timer=True) is None  # the net: a full pass now and then
    resyncs.forget("t1")
    clock.now = 600.0
    assert resyncs.cheap(body(), timer=True) is None
