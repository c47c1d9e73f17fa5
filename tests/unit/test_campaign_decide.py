"""Campaign's decisions (pure): the conditions of each phase, which timer passes run, and the
events its transitions post. Table-driven, on a fake clock; preflight and the phase order have
their own tests (test_campaign_preflight.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kopf
import pytest

from penguinmails.common.db.ledger import CAMPAIGN_FAULT
from penguinmails.operator.campaign import (
    CampaignController,
    CampaignSettings,
    Failure,
    _conditions,
)
from penguinmails.operator.clock import FakeClock
from penguinmails.operator.status import transitions

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
NOT_VERIFIED = Failure("DomainNotVerified", "publish its records")


@pytest.mark.parametrize(
    ("failures", "phase", "pause", "stopped", "ready", "sending"),
    [
        ([NOT_VERIFIED], "Pending", None, None, ("False", "PreflightFailed"),
         ("False", "PreflightFailed")),
        ([], "Sending", None, None, ("True", "Sending"), ("True", "Sending")),
        ([], "Paused", None, None, ("True", "Paused"), ("False", "Paused")),
        ([], "Scheduled", None, None, ("True", "Scheduled"), ("False", "OutsideWindow")),
        ([], "Completed", None, None, ("True", "Completed"), ("False", "Completed")),
        ([], "Stopped", None, "maxBounceRate 0.1 > 0.05", ("False", "StopRule"),
         ("False", "Stopped")),
        ([], "Paused", f"{CAMPAIGN_FAULT}: template", None, ("False", "SenderFault"),
         ("False", "Paused")),
        ([], "Paused", "5.7.26 DMARC", None, ("False", "SenderAuthenticationFailed"),
         ("False", "Paused")),
    ],
)  # fmt: skip
def test_conditions_of_each_phase(
    failures: list[Failure],
    phase: str,
    pause: str | None,
    stopped: str | None,
    ready: tuple[str, str],
    sending: tuple[str, str],
) -> None:
    found = {
        o.type: (o.status, o.reason)
        for o in _conditions(failures, phase, pause, stopped, {"sent": 1})
    }
    assert found["Ready"] == ready
    assert found["Sending"] == sending
    assert found["Preflight"][0] == ("False" if failures else "True")


def body(phase: str, generation: int = 1) -> kopf.Body:
    raw: dict[str, Any] = {
        "metadata": {"name": "c", "namespace": "tenant-a", "uid": "u", "generation": 1},
        "status": {"phase": phase, "observedGeneration": generation},
    }
    return kopf.Body(raw)  # type: ignore[arg-type]


def test_a_completed_campaign_is_counted_every_tenth_resync_only() -> None:
    clock = FakeClock(T0)
    controller = CampaignController(CampaignSettings("https://u.example/u", "pm"), 60, clock=clock)
    ran = []
    for _ in range(21):
        ran.append(controller.due(body("Completed"), clock.now()))
        clock.advance(60)
    assert ran.count(True) == 3 and ran[0] and ran[10] and ran[20]
    assert controller.due(body("Sending"), clock.now())
    assert controller.due(body("Completed", generation=0), clock.now())  # spec changed since


def cond(type_: str, status: str, reason: str) -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": "m"}


def test_finishing_is_news_not_a_warning() -> None:
    before = {"conditions": [cond("Ready", "True", "Sending"), cond("Sending", "True", "Sending")]}
    after = {
        "conditions": [cond("Ready", "True", "Completed"), cond("Sending", "False", "Completed")]
    }
    events = transitions(before, after, neutral=CampaignController.neutral)
    assert [(e.type, e.reason) for e in events] == [("Normal", "Completed")]
