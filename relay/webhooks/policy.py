"""When a failed delivery is tried again, and when an endpoint is given up on."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta

from relay.provider_errors import parse_retry_after

JITTER = 0.2
# Statuses whose Retry-After is honoured: the next attempt waits at least that long.
RETRY_AFTER_STATUSES = frozenset({429, 503})
GONE = 410


@dataclass(frozen=True)
class RetryPolicy:
    """`schedule[k]` is the delay after the (k+1)-th scheduled attempt failed, ±20 %."""

    schedule: list[timedelta]
    disable_after: timedelta
    jitter: float = JITTER
    rng: random.Random = field(default_factory=random.Random, compare=False)

    @property
    def max_attempts(self) -> int:
        return len(self.schedule) + 1

    def next_delay(
        self, scheduled_attempts: int, status_code: int | None, retry_after: str | None
    ) -> timedelta | None:
        """The wait before the next attempt, or None when the retries are exhausted."""
        index = scheduled_attempts - 1
        if index >= len(self.schedule):
            return None
        base = self.schedule[index].total_seconds()
        delay = timedelta(seconds=base * self.rng.uniform(1 - self.jitter, 1 + self.jitter))
        if status_code in RETRY_AFTER_STATUSES:
            asked = parse_retry_after(retry_after)
            if asked is not None and asked > delay:
                delay = asked
        return delay
