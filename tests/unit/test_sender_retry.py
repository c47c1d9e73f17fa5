"""The 4xx retry schedule at its defaults: MTA-like, over days."""

from __future__ import annotations

import pytest

from penguinmails.sender.retry import RetrySchedule


def test_default_schedule_retries_for_five_days() -> None:
    schedule = RetrySchedule()
    assert [schedule.delay(k) for k in range(1, 9)] == [
        300,
        600,
        1200,
        2400,
        4800,
        9600,
        14400,
        14400,
    ]
    attempts = 1
    while (delay := schedule.next_delay(attempts)) is not None:
        assert 0.9 * schedule.delay(attempts) <= delay <= 1.1 * schedule.delay(attempts)
        attempts += 1
    # Gives up once the next wait would pass 5 days, not after ~2 hours as before.
    assert 4 * 86400 < schedule.waited(attempts) <= 5 * 86400
    assert schedule.waited(attempts) + schedule.delay(attempts) > 5 * 86400
    print(f"\n{attempts} attempts over {schedule.waited(attempts) / 86400:.1f} days")


def test_bad_settings_are_refused_with_the_variables_named() -> None:
    with pytest.raises(ValueError, match="PM_RETRY_BASE_SECONDS"):
        RetrySchedule(base=0)
    with pytest.raises(ValueError, match="PM_RETRY_LIFETIME_SECONDS"):
        RetrySchedule(base=600, lifetime=60)
