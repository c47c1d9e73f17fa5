"""The controller framework (operator/controller.py, operator/status.py): what every kind gets.

Table-driven where it decides, with a fake clock and a fake API client that records what would
have been sent (the framework's own logic only: the real API server is in the integration
tests of each kind).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import kopf
import pytest
from kopf._core.engines import posting
from pydantic import BaseModel, ConfigDict, Field

from penguinmails.api.v1alpha1.common import ConditionedStatus, StatusModel
from penguinmails.operator.clock import FakeClock
from penguinmails.operator.conditions import Observed
from penguinmails.operator.context import Context
from penguinmails.operator.controller import Backoff, Controller, Pass
from penguinmails.operator.errors import ReconcileError, describe
from penguinmails.operator.status import Event, StatusWriter, removing_patch, transitions

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class Probe(StatusModel):
    banner: str | None = None
    error: str | None = None


class DemoStatus(ConditionedStatus):
    address: str | None = None
    last_probe: Probe | None = None
    count: int | None = Field(default=None, ge=0)


class DemoSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hostname: str = Field(min_length=3)


@dataclass
class FakeKube:
    """Records status patches and applies them like the API server's merge patch."""

    stored: dict[str, Any]
    patches: list[dict[str, Any]]

    async def patch_status(
        self,
        api_version: str,
        plural: str,
        name: str,
        patch: Mapping[str, Any],
        namespace: str | None = None,
    ) -> dict[str, Any]:
        self.patches.append(dict(patch["status"]))
        self.stored = merge(self.stored, patch["status"])
        return dict(self.stored)


def merge(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386."""
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merge(result[key], value)
        else:
            result[key] = value
    return result


def body(status: Mapping[str, Any] | None = None, spec: Mapping[str, Any] | None = None) -> Any:
    raw: dict[str, Any] = {
        "apiVersion": "penguinmails.io/v1alpha1",
        "kind": "Demo",
        "metadata": {"name": "d", "namespace": "ns", "uid": "u-1", "generation": 2},
        "spec": dict(spec or {"hostname": "mx.example.com"}),
        "status": dict(status or {}),
    }
    return kopf.Body(raw)  # type: ignore[arg-type]


def writer(kube: FakeKube, status: Mapping[str, Any]) -> StatusWriter[DemoStatus]:
    return StatusWriter(
        kube,  # type: ignore[arg-type]
        api_version="penguinmails.io/v1alpha1",
        plural="demos",
        body=body(status),
        model=DemoStatus,
        clock=FakeClock(T0),
    )


# -- the status writer --------------------------------------------------------------------

STALE = {
    "observedGeneration": 2,
    "address": "192.0.2.1",
    "lastProbe": {"banner": None, "error": "refused"},
    "blocks": ["written by another module"],
}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({}, {}, id="nothing changed: nothing written"),
        pytest.param({"address": None}, {"address": None}, id="a removed field disappears"),
        pytest.param(
            {"lastProbe": {"banner": "220 hi"}},
            {"lastProbe": {"banner": "220 hi", "error": None}},
            id="a nested field no longer desired disappears",
        ),
        pytest.param({"count": 3}, {"count": 3}, id="a new field"),
    ],
)
def test_patch_removes_what_is_no_longer_desired_and_only_that(
    fields: dict[str, Any], expected: dict[str, Any]
) -> None:
    status = {**STALE, "lastProbe": {"error": "refused"}}
    assert writer(FakeKube({}, []), status).patch((), fields) == expected


def test_fields_of_another_writer_are_left_alone() -> None:
    patch = removing_patch({"blocks": [1], "address": "a"}, {}, frozenset({"address"}))
    assert patch == {"address": None}


def test_a_field_the_model_does_not_have_is_a_bug() -> None:
    with pytest.raises(TypeError, match="DemoStatus has no field adress"):
        writer(FakeKube({}, []), {}).patch((), {"adress": "x"})


def test_a_value_the_model_refuses_is_refused_before_it_is_sent() -> None:
    with pytest.raises(ValueError, match="count"):
        writer(FakeKube({}, []), {}).patch((), {"count": -1})


def test_a_stored_field_the_model_now_refuses_is_dropped_not_blocking() -> None:
    patch = writer(FakeKube({}, []), {"count": -5, "observedGeneration": 2}).patch(
        (), {"address": "x"}
    )
    assert patch == {"address": "x", "count": None}


def test_writes_go_out_once_and_the_next_pass_starts_from_them() -> None:
    kube = FakeKube({}, [])
    out = writer(kube, {})
    ready = Observed("Ready", "True", "Ready", "ok")
    asyncio.run(out.write([ready], address="192.0.2.1"))
    asyncio.run(out.write([ready], address="192.0.2.1"))
    assert len(kube.patches) == 1
    assert out.current["address"] == "192.0.2.1"
    assert [c["type"] for c in out.current["conditions"]] == ["Ready", "Reconciling", "Stalled"]
    assert out.current["conditions"][0]["lastTransitionTime"] == "2026-01-01T12:00:00Z"


# -- events on transitions ----------------------------------------------------------------


def cond(type_: str, status: str, reason: str) -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": "m"}


@pytest.mark.parametrize(
    ("before", "after", "failure", "expected"),
    [
        pytest.param([], [cond("Ready", "Unknown", "Pending")], None, [], id="first Unknown"),
        pytest.param(
            [cond("Ready", "False", "A")], [cond("Ready", "False", "B")], None, [], id="reason"
        ),
        pytest.param(
            [cond("Ready", "False", "A")],
            [cond("Ready", "True", "Ready"), cond("Reconciling", "False", "Ready")],
            None,
            [("Normal", "Ready")],
            id="became True",
        ),
        pytest.param(
            [cond("Ready", "True", "Ready")],
            [cond("Ready", "False", "Listed"), cond("NotListed", "False", "Listed")],
            ReconcileError("Listed", "on a list"),
            [("Warning", "Listed")],
            id="one event per reason",
        ),
        pytest.param(
            [cond("Ready", "False", "Unreachable")],
            [cond("Ready", "False", "Unreachable")],
            ReconcileError("Unreachable", "down"),
            [],
            id="the same failure again is not news",
        ),
        pytest.param(
            [cond("Ready", "False", "Unreachable")],
            [cond("Ready", "False", "Forbidden")],
            ReconcileError("Forbidden", "rbac"),
            [("Warning", "Forbidden")],
            id="a new failure is",
        ),
    ],
)
def test_events_only_when_a_condition_changes(
    before: list[dict[str, Any]],
    after: list[dict[str, Any]],
    failure: ReconcileError | None,
    expected: list[tuple[str, str]],
) -> None:
    events = transitions({"conditions": before}, {"conditions": after}, failure)
    assert [(e.type, e.reason) for e in events] == expected
    assert all(isinstance(e, Event) for e in events)


# -- backoff and the one error type -------------------------------------------------------


def test_backoff_runs_on_the_injected_clock() -> None:
    clock = FakeClock(T0)
    backoff = Backoff(clock, base=5)
    assert backoff.failed("u") == 5
    assert backoff.waiting("u")
    clock.advance(5)
    assert not backoff.waiting("u")
    assert backoff.failed("u") == 10
    backoff.succeeded("u")
    assert not backoff.waiting("u") and backoff.failures("u") == 0


def test_every_failure_becomes_the_one_error_type() -> None:
    assert describe(ConnectionRefusedError("no")).reason == "Unreachable"
    own = ReconcileError("InvalidAPIKey", "fix the key", transient=False)
    assert describe(own) is own
    assert describe(RuntimeError("boom")).transient


# -- a whole pass of a kind built on the framework ----------------------------------------


class Demo(Controller[DemoSpec, DemoStatus]):
    kind: ClassVar[str] = "Demo"
    plural: ClassVar[str] = "demos"
    spec_model = DemoSpec
    status_model = DemoStatus

    def __init__(self, clock: FakeClock, outcome: BaseException | None) -> None:
        super().__init__(interval=60, backoff_base=10, clock=clock)
        self.outcome = outcome
        self.passes = 0

    async def reconcile(self, run: Pass[DemoSpec, DemoStatus]) -> None:
        self.passes += 1
        run.step = "Reachable"
        if self.outcome is not None:
            raise self.outcome
        await run.status.write(
            [Observed("Reachable", "True", "Answered", "ok"), Observed("Ready", "True", "Ok", "")]
        )


@pytest.fixture
def events() -> Iterator[asyncio.Queue[Any]]:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    posting.settings_var.set(kopf.OperatorSettings())
    posting.event_queue_var.set(queue)
    yield queue


def run_pass(demo: Demo, kube: FakeKube, obj: Any, *, timer: bool = False) -> None:
    async def go() -> None:
        posting.event_queue_loop_var.set(asyncio.get_running_loop())
        ctx = Context(settings=None, kube=kube, db=None)  # type: ignore[arg-type]
        await demo.run(ctx, obj, retry=0, logger=logging.getLogger("test"), timer=timer)

    asyncio.run(go())


def test_an_invalid_spec_names_the_field_and_is_not_retried(events: asyncio.Queue[Any]) -> None:
    demo, kube = Demo(FakeClock(T0), None), FakeKube({}, [])
    run_pass(demo, kube, body(spec={"hostname": "x"}))
    ready = next(c for c in kube.stored["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert ready["message"].startswith("spec.hostname: ")
    stalled = next(c for c in kube.stored["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True"
    assert demo.passes == 0 and not demo.backoff.waiting("u-1")


def test_a_transient_failure_is_reported_on_its_step_and_backs_off(
    events: asyncio.Queue[Any],
) -> None:
    clock = FakeClock(T0)
    demo, kube = Demo(clock, ReconcileError("Unreachable", "no answer")), FakeKube({}, [])
    with pytest.raises(kopf.TemporaryError) as raised:
        run_pass(demo, kube, body())
    assert raised.value.delay == 10
    found = {c["type"]: (c["status"], c["reason"]) for c in kube.stored["conditions"]}
    assert found["Reachable"] == ("False", "Unreachable")
    assert found["Ready"] == ("False", "Unreachable")
    assert found["Stalled"] == ("False", "Unreachable")
    # The timer waits out the backoff; a change does not.
    run_pass(demo, kube, body(kube.stored), timer=True)
    assert demo.passes == 1
    clock.advance(10)
    demo.outcome = None
    run_pass(demo, kube, body(kube.stored), timer=True)
    assert demo.passes == 2
    assert {c["type"]: c["status"] for c in kube.stored["conditions"]}["Ready"] == "True"
    reasons = [events.get_nowait().reason for _ in range(events.qsize())]
    assert reasons == ["Unreachable", "Answered", "Ok"]


def test_a_permanent_failure_stalls_without_a_kopf_retry(events: asyncio.Queue[Any]) -> None:
    error = ReconcileError("InvalidAPIKey", "the key is refused", transient=False)
    demo, kube = Demo(FakeClock(T0), error), FakeKube({}, [])
    run_pass(demo, kube, body())
    stalled = next(c for c in kube.stored["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "InvalidAPIKey")
