"""Timer passes of finished Campaigns (campaign.FinishedResyncs), with a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from penguinmails.operator.campaign import FinishedResyncs

INTERVAL = 60.0


def campaign(phase: str, *, observed: int = 2, generation: int = 2) -> dict[str, Any]:
    return {
        "metadata": {"uid": "u1", "generation": generation},
        "status": {"phase": phase, "observedGeneration": observed},
    }


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("body", "timer", "skipped"),
    [
        (campaign("Sending"), True, False),  # sending: every resync counts
        (campaign("Scheduled"), True, False),  # its start time comes by the timer
        (campaign("Completed", observed=1), True, False),  # a change not reconciled yet
        (campaign("Completed"), False, False),  # a change always runs
    ],
)
def test_only_timer_passes_of_finished_campaigns_are_skipped(
    body: dict[str, Any], timer: bool, skipped: bool
) -> None:
    resyncs = FinishedResyncs(INTERVAL, Clock())
    resyncs.skip(body, timer=timer)  # a first pass is never skipped: it is what others follow
    assert resyncs.skip(body, timer=timer) is skipped


def test_a_finished_campaign_is_counted_every_tenth_resync() -> None:
    clock = Clock()
    resyncs = FinishedResyncs(INTERVAL, clock)
    ran = []
    for tick in range(31):
        clock.now = 1000.0 + tick * INTERVAL
        if not resyncs.skip(campaign("Completed"), timer=True):
            ran.append(tick)
    assert ran == [0, 10, 20, 30]
    resyncs.forget("u1")  # deleted: its next pass (a re-creation with the uid) runs
    assert not resyncs.skip(campaign("Completed"), timer=True)
