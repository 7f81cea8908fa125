"""The webhook retry schedule: data plus one pure function (svix `calculate_retry_delay`).

What this module is for: answering "how long until the next attempt of this delivery, if any?"
from the endpoint's schedule, how the last attempt failed, the receiver's `Retry-After`, and a
random source the caller passes in (so tests fix it).

- A schedule is the list of waits between attempts. The first attempt is immediate, so a
  schedule of n delays allows n + 1 attempts. `DEFAULT_SCHEDULE` makes 10 attempts over about
  23.6 hours, growing roughly exponentially (5 s, 1 min, 5 min, 30 min, 1 h, 2 h, 4 h, 8 h, 8 h).
- Each delay is jittered by +/- `jitter` (default 20 %) so endpoints that failed together do
  not all come back together.
- After `rate_limited` (429) and `timeout` the wait is at least `slow_floor_seconds` (default
  30 s): a receiver that is overloaded should not be hit again within seconds.
- A `Retry-After` is honoured up to `max_retry_after_seconds` (default 1 h), and only ever
  lengthens the wait: a receiver cannot make us retry faster than the schedule.
- Every failure class is retried on the same schedule, `refused_target` and `redirect`
  included: DNS and endpoint configurations get fixed, and the endpoint's owner sees every
  failed attempt with its reason before the delivery is dead-lettered.

What it must never do: read a clock, sleep, import httpx or do any I/O; classifying HTTP
outcomes into failure classes lives in `delivery.outcome`.
"""

from __future__ import annotations

import email.utils
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, get_args

FailureClass = Literal[
    "http_status", "rate_limited", "timeout", "connection", "redirect", "tls", "refused_target"
]
FAILURE_CLASSES: tuple[FailureClass, ...] = get_args(FailureClass)
SLOW_FAILURES: frozenset[FailureClass] = frozenset({"rate_limited", "timeout"})

MAX_DELAY_SECONDS = 7 * 24 * 3600.0
MAX_DELAYS = 20


@dataclass(frozen=True)
class RetrySchedule:
    """Waits between attempts (seconds); len(delays) + 1 attempts in all."""

    delays: tuple[float, ...]
    jitter: float = 0.2
    slow_floor_seconds: float = 30.0
    max_retry_after_seconds: float = 3600.0

    def __post_init__(self) -> None:
        if not 1 <= len(self.delays) <= MAX_DELAYS:
            raise ValueError(
                f"a retry schedule needs 1 to {MAX_DELAYS} delays, not {len(self.delays)}"
            )
        for position, delay in enumerate(self.delays, start=1):
            _check_delay(delay, f"delay {position} ({delay!r})")
        if not (math.isfinite(self.jitter) and 0 <= self.jitter < 1):
            raise ValueError(f"jitter must be at least 0 and below 1, not {self.jitter!r}")
        if not (math.isfinite(self.slow_floor_seconds) and self.slow_floor_seconds >= 0):
            raise ValueError("slow_floor_seconds must be a finite number >= 0")
        if not (math.isfinite(self.max_retry_after_seconds) and self.max_retry_after_seconds >= 0):
            raise ValueError("max_retry_after_seconds must be a finite number >= 0")

    @property
    def attempts(self) -> int:
        """How many attempts a delivery gets in all, the immediate first one included."""
        return len(self.delays) + 1

    @classmethod
    def parse(cls, text: str, **options: float) -> RetrySchedule:
        """A schedule from a comma-separated list of seconds, e.g. `"5, 60, 300, 1800"`.

        Fractions are allowed; each delay must be > 0 and at most 7 days; 1 to 20 delays.
        `options` sets the other fields (`jitter=0.1`, ...). Raises ValueError naming the
        first bad entry.
        """
        entries = text.split(",")
        if not text.strip():
            raise ValueError("a retry schedule needs at least one delay")
        if len(entries) > MAX_DELAYS:
            raise ValueError(f"a retry schedule holds at most {MAX_DELAYS} delays")
        delays = []
        for position, entry in enumerate(entries, start=1):
            label = f"delay {position} ({entry.strip()!r})"
            try:
                value = float(entry)
            except ValueError:
                raise ValueError(f"{label} is not a number of seconds") from None
            _check_delay(value, label)
            delays.append(value)
        return cls(tuple(delays), **options)

    def as_text(self) -> str:
        """The delays in the form `parse` reads (`"5,60,300"`)."""
        return ",".join(f"{delay:g}" for delay in self.delays)

    def next_delay(
        self,
        attempt: int,
        *,
        failure: FailureClass,
        retry_after: float | None = None,
        rng: random.Random,
    ) -> float | None:
        """Seconds to wait before the next attempt, or None when the attempts are spent.

        `attempt` is how many attempts were made so far (1 after the first one failed).
        """
        if attempt < 1:
            raise ValueError(f"attempt counts the attempts made so far; {attempt} is below 1")
        if failure not in FAILURE_CLASSES:
            raise ValueError(f"unknown failure class {failure!r}")
        if attempt >= self.attempts:
            return None
        scheduled = self.delays[attempt - 1]
        delay = scheduled * rng.uniform(1 - self.jitter, 1 + self.jitter)
        if failure in SLOW_FAILURES:
            delay = max(delay, self.slow_floor_seconds)
        if retry_after is not None and not math.isnan(retry_after):
            delay = max(delay, min(max(retry_after, 0.0), self.max_retry_after_seconds))
        return delay


def _check_delay(value: float, label: str) -> None:
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{label} must be a positive number of seconds")
    if value > MAX_DELAY_SECONDS:
        raise ValueError(f"{label} is longer than 7 days")


DEFAULT_SCHEDULE = RetrySchedule(
    delays=(5.0, 60.0, 300.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 28800.0)
)


def parse_retry_after(value: str, now: datetime) -> float | None:
    """Seconds a `Retry-After` header asks for, from delta-seconds or an HTTP-date (RFC 9110).

    A date in the past gives 0.0; anything unreadable gives None (the header is then ignored).
    Naive datetimes, `now` included, are taken as UTC. Clamping is `next_delay`'s job.
    """
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)
