"""SmtpServer's decisions (pure): the next provisioning step, whether a probe is due, Ready and
the phase. Table-driven, on a fake clock and fake provider observations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from penguinmails.api.v1alpha1.smtpserver import SmtpServerPhase
from penguinmails.operator.clock import FakeClock
from penguinmails.operator.providers.base import External, ServerRef
from penguinmails.operator.smtpserver import (
    Step,
    _phase,
    _ready,
    decide_provisioning,
    probe_due,
)

REF = ServerRef("ns", "mx", "0123456789abcdef0123456789abcdef", "mx.example.com")
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
ORDER = {"name": REF.external_name, "requestedAt": "2026-01-01T12:00:00Z"}
BUILDING = External("42", ready=False, state="pending")
RUNNING = External("42", ready=True, state="active", ip_address="192.0.2.7")


@pytest.mark.parametrize(
    ("status", "external", "after", "step"),
    [
        pytest.param({}, None, 0, Step.ORDER, id="nothing anywhere: order"),
        pytest.param({"createRequested": ORDER}, None, 60, Step.WAIT_FOR_LISTING, id="lagging"),
        pytest.param({"createRequested": ORDER}, None, 1800, Step.REORDER, id="never listed"),
        pytest.param(
            {"createRequested": {**ORDER, "name": "pm-other"}}, None, 60, Step.REORDER, id="other"
        ),
        pytest.param({"createRequested": ORDER}, BUILDING, 60, Step.RECORD_ID, id="listed"),
        pytest.param({}, BUILDING, 0, Step.RECORD_ID, id="found by name after a crash"),
        pytest.param({"providerId": "41"}, RUNNING, 0, Step.RECORD_ID, id="another id"),
        pytest.param({"providerId": "42"}, BUILDING, 0, Step.WAIT_FOR_PROVIDER, id="building"),
        pytest.param({"providerId": "42"}, RUNNING, 0, Step.CONFIGURE, id="running"),
    ],
)
def test_next_provisioning_step(
    status: dict[str, Any], external: External | None, after: float, step: Step
) -> None:
    clock = FakeClock(T0)
    clock.advance(after)
    assert decide_provisioning(status, REF, external, 1800, clock.now()) is step


def test_a_provider_that_lists_at_once_is_ordered_again_at_once() -> None:
    status = {"createRequested": ORDER}
    assert decide_provisioning(status, REF, None, 0, T0) is Step.REORDER


def conditions(generation: int) -> list[dict[str, Any]]:
    return [
        {"type": t, "status": "True", "observedGeneration": generation}
        for t in ("Reachable", "ReverseDNSVerified", "NotListed")
    ]


PROBED = {
    "ipAddress": "192.0.2.7",
    "lastProbe": {"time": "2026-01-01T12:00:00Z"},
    "conditions": conditions(3),
}


@pytest.mark.parametrize(
    ("probe_seconds", "status", "ip", "after", "due"),
    [
        pytest.param(300, {}, "192.0.2.7", 0, True, id="never probed"),
        pytest.param(300, PROBED, "192.0.2.7", 299, False, id="fresh"),
        pytest.param(300, PROBED, "192.0.2.7", 300, True, id="old"),
        pytest.param(300, PROBED, "192.0.2.8", 1, True, id="new address"),
        pytest.param(300, {**PROBED, "conditions": conditions(2)}, "192.0.2.7", 1, True, id="spec"),
        pytest.param(0, {}, "192.0.2.7", 0, False, id="probes disabled"),
    ],
)
def test_probe_due(
    probe_seconds: float, status: dict[str, Any], ip: str, after: float, due: bool
) -> None:
    clock = FakeClock(T0)
    clock.advance(after)
    assert probe_due(probe_seconds, status, 3, ip, clock.now()) is due


def cond(type_: str, status: str, reason: str = "R") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": "m"}


ALL_TRUE = [
    cond(t, "True")
    for t in ("Provisioned", "MailStackReady", "Reachable", "ReverseDNSVerified", "NotListed")
]


@pytest.mark.parametrize(
    ("current", "ready", "reason", "phase"),
    [
        pytest.param([], "False", "Pending", SmtpServerPhase.PROVISIONING, id="nothing yet"),
        pytest.param(ALL_TRUE, "True", "Ready", SmtpServerPhase.READY, id="all true"),
        pytest.param(
            [*ALL_TRUE[:4], cond("NotListed", "Unknown", "LookupFailed")],
            "True",
            "ReadyWithWarnings",
            SmtpServerPhase.READY,
            id="a blocklist that would not answer only warns",
        ),
        pytest.param(
            [*ALL_TRUE[:4], cond("NotListed", "False", "Listed")],
            "False",
            "Listed",
            SmtpServerPhase.DEGRADED,
            id="listed",
        ),
        pytest.param(
            [ALL_TRUE[0], cond("MailStackReady", "False", "Installing")],
            "False",
            "Installing",
            SmtpServerPhase.CONFIGURING,
            id="configuring",
        ),
    ],
)
def test_ready_and_phase(
    current: list[dict[str, Any]], ready: str, reason: str, phase: SmtpServerPhase
) -> None:
    observed = _ready(current, probes_enabled=True)
    assert (observed.status, observed.reason) == (ready, reason)
    assert _phase(current, observed, False) is phase
    assert _phase(current, observed, True) is SmtpServerPhase.FAILED
