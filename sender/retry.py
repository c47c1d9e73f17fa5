"""When to try a deferred delivery again: an MTA-like schedule over days.

Receivers that greylist or are briefly overloaded answer 4xx and expect the message again
minutes to hours later, for days: Postfix retries from 5 minutes, doubling up to about an hour
between tries, for 5 days (maximal_queue_lifetime). We do the same, with a longer ceiling
(cold mail is not urgent, and receivers that defer often defer again):

    after attempt 1: 5 min, then 10, 20, 40, 80, 160 min, then every 4 h, until 5 days
    have been spent waiting; then the delivery fails with the last reply.

Configurable: PM_RETRY_BASE_SECONDS (300), PM_RETRY_MAX_SECONDS (14400),
PM_RETRY_LIFETIME_SECONDS (432000). Each delay has ±10% jitter, so a greylisting receiver
does not see a whole campaign come back in the same second.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RetrySchedule"]


@dataclass(frozen=True)
class RetrySchedule:
    base: float = 300.0
    maximum: float = 14400.0
    lifetime: float = 432000.0
    """Seconds of waiting after which a deferred delivery gives up."""

    def __post_init__(self) -> None:
        if not 0 < self.base <= self.maximum or self.lifetime < self.base:
            raise ValueError(
                "retry schedule: need 0 < PM_RETRY_BASE_SECONDS <= PM_RETRY_MAX_SECONDS and "
                "PM_RETRY_LIFETIME_SECONDS >= PM_RETRY_BASE_SECONDS"
            )

    def delay(self, attempts: int) -> float:
        """Seconds to wait after `attempts` attempts (1 = after the first), without jitter."""
        doublings = min(max(attempts - 1, 0), 62)
        return min(self.maximum, self.base * 2.0**doublings)

    def waited(self, attempts: int) -> float:
        """Seconds of scheduled waiting before attempt `attempts` + 1."""
        return sum(self.delay(k) for k in range(1, attempts))

    def next_delay(self, attempts: int) -> float | None:
        """The jittered delay after `attempts` attempts, or None when it is time to give up."""
        if self.waited(attempts) + self.delay(attempts) > self.lifetime:
            return None
        return self.delay(attempts) * random.uniform(0.9, 1.1)  # noqa: S311 (jitter)
