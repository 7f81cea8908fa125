"""The publish retry policy: data plus one pure function.

`RetryPolicy.next_delay` answers "how long until attempt N+1?" with exponential backoff and full
jitter (AWS architecture blog, "Exponential Backoff And Jitter"): a uniform draw between zero and
min(cap, base * 2**(attempt-1)). An upstream `Retry-After` is a floor, never shortened by jitter.
It returns None when the attempt budget is spent. The random source is passed in, so tests fix it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


class RandomSource:
    """The slice of `random.Random` the policy needs (so a seeded Random can be passed)."""

    def uniform(self, a: float, b: float) -> float:  # pragma: no cover - protocol
        raise NotImplementedError


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_seconds: float = 30.0
    cap_seconds: float = 3600.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_seconds < 0 or self.cap_seconds < 0:
            raise ValueError("retry base and cap must not be negative")
        if self.cap_seconds < self.base_seconds:
            raise ValueError("retry cap must not be below the base")

    def next_delay(
        self,
        attempt: int,
        *,
        retry_after: float | None = None,
        rng: random.Random | RandomSource | None = None,
    ) -> float | None:
        """Seconds to wait after failed attempt number `attempt` (1-based), or None if spent."""
        if attempt >= self.max_attempts:
            return None
        ceiling = min(self.cap_seconds, self.base_seconds * (2 ** (attempt - 1)))
        delay = (rng or random).uniform(0.0, ceiling)
        if retry_after is not None and retry_after > delay:
            delay = retry_after
        return delay
