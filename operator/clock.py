"""The clock every controller reads, injected so that decisions can be tested at any time.

As in cert-manager's controllers (`k8s.io/utils/clock`): code that decides (is a probe due,
is an order still in flight, is a backoff over) takes the time from a `Clock`, never from
`datetime.now()` itself; tests pass a `FakeClock` and move it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Wall-clock time, timezone-aware UTC: for what is written into status."""
        ...

    def monotonic(self) -> float:
        """Seconds that never go back: for backoff and other in-process delays."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told to (tests)."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._monotonic = 1000.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._monotonic += seconds
