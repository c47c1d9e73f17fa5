"""SmtpServer's decisions (pure): the next provisioning step, whether a probe is due, Ready and
the phase. Table-driven, on a fake clock and fake provider observations."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any
from unittest.mock import patch

import kopf
import pytest

from penguinmails.api.v1alpha1.smtpserver import SmtpServerPhase
from penguinmails.common.settings import SmtpServerSettings
from penguinmails.operator.clock import FakeClock
from penguinmails.operator.context import Context
from penguinmails.operator.providers.base import External, ServerRef
from penguinmails.operator.smtpserver import (
    ControllerState,
    SmtpServerController,
    Step,
    _phase,
    _ready,
    decide_provisioning,
    probe_due,
)
from penguinmails.operator.status import transitions

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


# -- every condition transition, through the controller where it decides -----------------


@pytest.mark.parametrize(
    ("current", "reason", "phase"),
    [
        pytest.param(
            [*ALL_TRUE[:3], cond("ReverseDNSVerified", "Unknown", "LookupFailed"), ALL_TRUE[4]],
            "LookupFailed",
            SmtpServerPhase.DEGRADED,
            id="rDNS that could not be looked up holds Ready (only blocklists warn)",
        ),
        pytest.param(
            [
                *ALL_TRUE[:2],
                cond("Reachable", "False", "NoGreeting"),
                ALL_TRUE[3],
                cond("NotListed", "Unknown", "LookupFailed"),
            ],
            "NoGreeting",
            SmtpServerPhase.DEGRADED,
            id="a blocklist warning does not hide an unreachable server",
        ),
        pytest.param(
            [*ALL_TRUE[:4], cond("NotListed", "Unknown", "ProbesDisabled")],
            "ProbesDisabled",
            SmtpServerPhase.DEGRADED,
            id="unknown for another reason than a lookup is not a warning",
        ),
    ],
)
def test_what_holds_ready_back(
    current: list[dict[str, Any]], reason: str, phase: SmtpServerPhase
) -> None:
    observed = _ready(current, probes_enabled=True)
    assert (observed.status, observed.reason) == ("False", reason)
    assert _phase(current, observed, False) is phase


def test_with_probes_disabled_ready_follows_provisioning_and_the_mail_stack() -> None:
    current = [*ALL_TRUE[:2], *(cond(t, "Unknown", "ProbesDisabled") for t in PROBES)]
    observed = _ready(current, probes_enabled=False)
    assert (observed.status, observed.reason) == ("True", "Ready")
    assert _ready(current, probes_enabled=True).status == "False"


PROBES = ("Reachable", "ReverseDNSVerified", "NotListed")
BLOCKLISTS_UNKNOWN = [*ALL_TRUE[:4], cond("NotListed", "Unknown", "LookupFailed")]


@pytest.mark.parametrize(
    ("before", "after", "events"),
    [
        pytest.param(
            ALL_TRUE,
            BLOCKLISTS_UNKNOWN,
            [("Warning", "LookupFailed")],
            id="clean -> blocklists unknown: a warning, Ready stays True",
        ),
        pytest.param(
            [*ALL_TRUE[:4], cond("NotListed", "False", "Listed")],
            BLOCKLISTS_UNKNOWN,
            [("Warning", "LookupFailed"), ("Normal", "ReadyWithWarnings")],
            id="listed -> unknown: Ready again, with the warning",
        ),
        pytest.param(
            BLOCKLISTS_UNKNOWN,
            ALL_TRUE,
            [("Normal", "R")],
            id="unknown -> clean: NotListed True",
        ),
    ],
)
def test_blocklist_transitions_and_their_events(
    before: list[dict[str, Any]], after: list[dict[str, Any]], events: list[tuple[str, str]]
) -> None:
    def status(current: list[dict[str, Any]]) -> dict[str, Any]:
        ready = _ready(current, probes_enabled=True)
        return {"conditions": [*current, cond("Ready", ready.status, ready.reason)]}

    found = transitions(status(before), status(after))
    assert [(e.type, e.reason) for e in found] == events
    assert _ready(after, probes_enabled=True).status == "True"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        pytest.param(
            {"hostname": "x", "provider": {"relay": {"host": "h"}}},
            "spec.hostname",
            id="hostname too short",
        ),
        pytest.param({"hostname": "mx.example.com"}, "spec.provider", id="no provider"),
        pytest.param(
            {"hostname": "mx.example.com", "provider": {"relay": {"host": "h", "port": 0}}},
            "spec.provider.relay.port",
            id="port out of range",
        ),
        pytest.param(
            {
                "hostname": "mx.example.com",
                "provider": {"relay": {"host": "h"}, "mailuInCluster": {}},
            },
            "spec.provider",
            id="two providers",
        ),
    ],
)
def test_an_invalid_spec_fails_the_server_naming_the_field(
    spec: dict[str, Any], field: str
) -> None:
    clock = FakeClock(T0)
    controller = SmtpServerController(ControllerState(SmtpServerSettings.from_env()), clock=clock)
    kube = StatusKube()
    raw: dict[str, Any] = {
        "metadata": {"name": "mx", "namespace": "tenant-a", "uid": "u", "generation": 1},
        "spec": spec,
        "status": {},
    }

    async def go() -> None:
        ctx = Context(settings=None, kube=kube, db=None)  # type: ignore[arg-type]
        body = kopf.Body(raw)  # type: ignore[arg-type]
        with patch("kopf.warn"), patch("kopf.info"):
            await controller.run(ctx, body, retry=0, logger=logging.getLogger("t"), timer=False)

    asyncio.run(go())
    ready = next(c for c in kube.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert ready["message"].startswith(f"{field}: ")
    assert ready["message"].endswith("; fix the SmtpServer's spec")
    assert ready["lastTransitionTime"] == "2026-01-01T12:00:00Z"  # the fake clock's
    assert kube.status["phase"] == SmtpServerPhase.FAILED.value
    assert not controller.backoff.waiting("u")  # not retried: only a new spec can fix it


class StatusKube:
    """Keeps the status the controller writes (the API server's merge patch, top level)."""

    def __init__(self) -> None:
        self.status: dict[str, Any] = {}

    async def patch_status(
        self, api_version: str, plural: str, name: str, body: Any, namespace: str | None = None
    ) -> dict[str, Any]:
        self.status = {k: v for k, v in {**self.status, **body["status"]}.items() if v is not None}
        return {"status": self.status, **self.status}
