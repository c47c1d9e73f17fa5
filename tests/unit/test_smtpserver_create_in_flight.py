"""An order in flight: nothing is ordered again until the settle window has been watched."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from penguinmails.operator.providers.base import ServerRef
from penguinmails.operator.smtpserver import create_in_flight

REF = ServerRef("ns", "mx", "0123456789abcdef0123456789abcdef", "mx.example.com")
ORDERED = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
STATUS = {"createRequested": {"name": REF.external_name, "requestedAt": "2026-01-01T12:00:00Z"}}


def test_an_order_younger_than_the_window_blocks_a_new_one() -> None:
    left = create_in_flight(STATUS, REF, 1800, ORDERED + timedelta(seconds=600))
    assert left == 1200


def test_past_the_window_the_order_is_given_up() -> None:
    assert create_in_flight(STATUS, REF, 1800, ORDERED + timedelta(seconds=1800)) is None


def test_nothing_in_flight_or_an_order_for_another_name() -> None:
    assert create_in_flight({}, REF, 1800, ORDERED) is None
    other = {"createRequested": {"name": "pm-other", "requestedAt": "2026-01-01T12:00:00Z"}}
    assert create_in_flight(other, REF, 1800, ORDERED) is None


def test_a_provider_that_lists_at_once_never_waits() -> None:
    assert create_in_flight(STATUS, REF, 0, ORDERED) is None
