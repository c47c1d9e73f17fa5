"""The subscription state machine: what each Stripe status means for the Tenant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from penguinmails.api.billing.webhook import desired

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
GRACE = timedelta(days=3)


@pytest.mark.parametrize("status", ["active", "trialing"])
def test_paying_states_send(status: str) -> None:
    assert desired(status, None, now=NOW, grace=GRACE) == (False, None)


def test_past_due_sends_until_the_grace_period_is_over() -> None:
    inside = NOW - GRACE + timedelta(seconds=1)
    assert desired("past_due", inside, now=NOW, grace=GRACE) == (False, None)
    suspended, reason = desired("past_due", NOW - GRACE, now=NOW, grace=GRACE)
    assert suspended is True
    assert reason == (
        "Billing: the payment of the latest invoice failed on 2026-11-28 and the 3-day grace "
        "period is over; update the payment method in the billing portal to resume sending"
    )


@pytest.mark.parametrize(
    ("status", "fix"),
    [
        ("unpaid", "pay them in the billing portal"),
        ("paused", "add one in the billing portal"),
        ("canceled", "subscribe to a plan again"),
    ],
)
def test_states_that_suspend_say_what_to_do(status: str, fix: str) -> None:
    suspended, reason = desired(status, None, now=NOW, grace=GRACE)
    assert suspended is True and reason is not None
    assert reason.startswith("Billing: ") and fix in reason


@pytest.mark.parametrize("status", ["incomplete", "incomplete_expired"])
def test_states_that_never_granted_anything_change_nothing(status: str) -> None:
    assert desired(status, None, now=NOW, grace=GRACE) == (None, None)
