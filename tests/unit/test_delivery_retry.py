"""The webhook retry schedule (pure) and Retry-After parsing; seeded random, fixed clock."""

from __future__ import annotations

import math
import random
import ssl
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from delivery.outcome import classify
from delivery.retry import (
    DEFAULT_SCHEDULE,
    FAILURE_CLASSES,
    FailureClass,
    RetrySchedule,
    parse_retry_after,
)
from delivery.targets import RefusedTarget

NOW = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
EXACT = RetrySchedule((5.0, 60.0, 300.0), jitter=0.0)


def rng() -> random.Random:
    return random.Random(7)


# -- the default schedule --


def test_default_schedule_is_ten_attempts_over_about_a_day() -> None:
    assert DEFAULT_SCHEDULE.attempts == 10
    assert 20 * 3600 <= sum(DEFAULT_SCHEDULE.delays) <= 26 * 3600
    assert DEFAULT_SCHEDULE.delays[0] <= 10  # the first retry comes quickly
    assert list(DEFAULT_SCHEDULE.delays) == sorted(DEFAULT_SCHEDULE.delays)


def test_jitter_bounds_grow_monotonically_along_the_default_schedule() -> None:
    j = DEFAULT_SCHEDULE.jitter
    lows = [d * (1 - j) for d in DEFAULT_SCHEDULE.delays]
    highs = [d * (1 + j) for d in DEFAULT_SCHEDULE.delays]
    assert lows == sorted(lows)
    assert highs == sorted(highs)


def test_without_jitter_the_delays_are_the_schedule() -> None:
    delays = [EXACT.next_delay(n, failure="http_status", rng=rng()) for n in range(1, 5)]
    assert delays == [5.0, 60.0, 300.0, None]


def test_exhausted_after_len_plus_one_attempts() -> None:
    for attempt in range(1, DEFAULT_SCHEDULE.attempts):
        assert DEFAULT_SCHEDULE.next_delay(attempt, failure="connection", rng=rng()) is not None
    for attempt in (DEFAULT_SCHEDULE.attempts, DEFAULT_SCHEDULE.attempts + 5):
        assert DEFAULT_SCHEDULE.next_delay(attempt, failure="connection", rng=rng()) is None


def test_attempt_counts_from_one_and_failure_classes_are_checked() -> None:
    with pytest.raises(ValueError, match="below 1"):
        EXACT.next_delay(0, failure="timeout", rng=rng())
    with pytest.raises(ValueError, match="unknown failure class 'teapot'"):
        EXACT.next_delay(1, failure="teapot", rng=rng())  # type: ignore[arg-type]


def test_the_same_seed_gives_the_same_delays() -> None:
    first = [DEFAULT_SCHEDULE.next_delay(n, failure="http_status", rng=rng()) for n in (1, 5)]
    again = [DEFAULT_SCHEDULE.next_delay(n, failure="http_status", rng=rng()) for n in (1, 5)]
    assert first == again


# -- slow failures and Retry-After --


@pytest.mark.parametrize("failure", ["rate_limited", "timeout"])
def test_rate_limits_and_timeouts_wait_at_least_the_slow_floor(failure: FailureClass) -> None:
    assert EXACT.next_delay(1, failure=failure, rng=rng()) == 30.0
    assert EXACT.next_delay(2, failure=failure, rng=rng()) == 60.0  # the floor only lifts
    assert EXACT.next_delay(1, failure="http_status", rng=rng()) == 5.0


def test_retry_after_lengthens_the_wait() -> None:
    assert EXACT.next_delay(1, failure="rate_limited", retry_after=120, rng=rng()) == 120.0
    assert EXACT.next_delay(1, failure="http_status", retry_after=7.5, rng=rng()) == 7.5


def test_retry_after_never_shortens_the_scheduled_wait() -> None:
    assert EXACT.next_delay(3, failure="rate_limited", retry_after=1, rng=rng()) == 300.0
    assert EXACT.next_delay(3, failure="rate_limited", retry_after=-50, rng=rng()) == 300.0
    assert EXACT.next_delay(3, failure="rate_limited", retry_after=math.nan, rng=rng()) == 300.0


def test_retry_after_is_clamped_to_the_maximum() -> None:
    for asked in (86_400.0, 10.0**12, math.inf):
        assert EXACT.next_delay(1, failure="rate_limited", retry_after=asked, rng=rng()) == 3600.0
    short = RetrySchedule((5.0,), jitter=0.0, max_retry_after_seconds=60)
    assert short.next_delay(1, failure="rate_limited", retry_after=600, rng=rng()) == 60.0


def test_retry_after_does_not_revive_an_exhausted_delivery() -> None:
    assert EXACT.next_delay(4, failure="rate_limited", retry_after=10, rng=rng()) is None


@given(
    attempt=st.integers(min_value=1, max_value=12),
    failure=st.sampled_from(FAILURE_CLASSES),
    retry_after=st.none() | st.floats(allow_nan=False, min_value=-1e9, max_value=1e12),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_every_delay_lies_within_its_bounds(
    attempt: int, failure: FailureClass, retry_after: float | None, seed: int
) -> None:
    schedule = DEFAULT_SCHEDULE
    delay = schedule.next_delay(
        attempt, failure=failure, retry_after=retry_after, rng=random.Random(seed)
    )
    if attempt >= schedule.attempts:
        assert delay is None
        return
    assert delay is not None
    scheduled = schedule.delays[attempt - 1]
    low = scheduled * (1 - schedule.jitter)
    if failure in ("rate_limited", "timeout"):
        low = max(low, schedule.slow_floor_seconds)
    if retry_after is not None:
        low = max(low, min(max(retry_after, 0), schedule.max_retry_after_seconds))
    high = max(low, scheduled * (1 + schedule.jitter))
    assert low <= delay <= high


# -- parsing and validation --


def test_parse_reads_comma_separated_seconds_with_fractions() -> None:
    schedule = RetrySchedule.parse(" 0.5, 60 ,300,1e3 ", jitter=0.1)
    assert schedule.delays == (0.5, 60.0, 300.0, 1000.0)
    assert schedule.jitter == 0.1
    assert schedule.attempts == 5
    assert schedule.as_text() == "0.5,60,300,1000"
    assert RetrySchedule.parse(DEFAULT_SCHEDULE.as_text()) == DEFAULT_SCHEDULE


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "at least one delay"),
        ("  ", "at least one delay"),
        ("5,,60", r"delay 2 \(''\) is not a number"),
        ("5,ten", r"delay 2 \('ten'\) is not a number"),
        ("0", r"delay 1 \('0'\) must be a positive"),
        ("5,-1", r"delay 2 \('-1'\) must be a positive"),
        ("nan", "must be a positive"),
        ("inf", "must be a positive"),
        ("60,604801", r"delay 2 \('604801'\) is longer than 7 days"),
        (",".join(["1"] * 21), "at most 20 delays"),
    ],
)
def test_parse_refuses_bad_entries_naming_them(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        RetrySchedule.parse(text)


def test_limits_are_inclusive() -> None:
    assert RetrySchedule.parse(",".join(["1"] * 20)).attempts == 21
    assert RetrySchedule.parse("604800").delays == (604800.0,)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"delays": ()}, "1 to 20 delays"),
        ({"delays": (5.0,), "jitter": 1.0}, "jitter"),
        ({"delays": (5.0,), "jitter": -0.1}, "jitter"),
        ({"delays": (5.0,), "slow_floor_seconds": -1.0}, "slow_floor_seconds"),
        ({"delays": (5.0,), "max_retry_after_seconds": math.inf}, "max_retry_after_seconds"),
        ({"delays": (5.0, 0.0)}, r"delay 2 \(0.0\) must be a positive"),
    ],
)
def test_schedules_are_validated_when_made(fields: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        RetrySchedule(**fields)  # type: ignore[arg-type]


@given(st.lists(st.floats(min_value=0.001, max_value=604800), min_size=1, max_size=20))
def test_parse_reads_what_as_text_writes(delays: list[float]) -> None:
    text = ",".join(repr(d) for d in delays)
    assert RetrySchedule.parse(text).delays == tuple(delays)


# -- Retry-After --


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("Mon, 23 Nov 2026 10:01:00 GMT", 60.0),  # IMF-fixdate
        ("Monday, 23-Nov-26 10:02:00 GMT", 120.0),  # obsolete RFC 850
        ("Mon Nov 23 10:00:30 2026", 30.0),  # obsolete asctime
        ("Mon, 23 Nov 2026 09:00:00 GMT", 0.0),  # in the past
        ("9" * 400, math.inf),  # clamped later by next_delay
    ],
)
def test_parse_retry_after_reads_seconds_and_http_dates(value: str, seconds: float) -> None:
    assert parse_retry_after(value, NOW) == seconds


@pytest.mark.parametrize("value", ["", "soon", "-5", "1.5", "٣", "Mon, 99 Nov 2026 10:01:00 GMT"])
def test_parse_retry_after_ignores_what_it_cannot_read(value: str) -> None:
    assert parse_retry_after(value, NOW) is None


def test_parse_retry_after_takes_naive_times_as_utc() -> None:
    naive_now = NOW.replace(tzinfo=None)
    assert parse_retry_after("Mon, 23 Nov 2026 10:01:00 GMT", naive_now) == 60.0
    later = NOW + timedelta(hours=1)
    assert parse_retry_after("Mon, 23 Nov 2026 10:01:00 GMT", later) == 0.0


# -- classifying outcomes --

REQUEST = httpx.Request("POST", "https://hooks.example.com/in")


def _tls_failure() -> httpx.ConnectError:
    try:
        try:
            raise ssl.SSLCertVerificationError("certificate verify failed")
        except ssl.SSLError as error:
            raise httpx.ConnectError("TLS handshake failed", request=REQUEST) from error
    except httpx.ConnectError as wrapped:
        return wrapped


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        (200, None, None),
        (204, None, None),
        (299, None, None),
        (301, None, "redirect"),
        (307, None, "redirect"),
        (429, None, "rate_limited"),
        (400, None, "http_status"),
        (410, None, "http_status"),
        (500, None, "http_status"),
        (503, None, "http_status"),
        (None, httpx.ConnectTimeout("slow", request=REQUEST), "timeout"),
        (None, httpx.ReadTimeout("slow", request=REQUEST), "timeout"),
        (None, httpx.PoolTimeout("busy", request=REQUEST), "timeout"),
        (None, TimeoutError(), "timeout"),
        (None, httpx.ConnectError("refused", request=REQUEST), "connection"),
        (None, httpx.ReadError("reset", request=REQUEST), "connection"),
        (None, httpx.RemoteProtocolError("bad", request=REQUEST), "connection"),
        (None, ConnectionResetError(), "connection"),
        (None, _tls_failure(), "tls"),
        (None, ssl.SSLError("bad record"), "tls"),
        (None, RefusedTarget("loopback"), "refused_target"),
        (200, httpx.ReadTimeout("body too slow", request=REQUEST), "timeout"),  # error wins
    ],
)
def test_classify(status: int | None, error: BaseException | None, expected: str | None) -> None:
    assert classify(status, error) == expected


def test_classify_refuses_what_is_not_an_outcome() -> None:
    with pytest.raises(ValueError, match="not a delivery outcome: KeyError"):
        classify(None, KeyError("bug"))
    with pytest.raises(ValueError, match="status code or an error"):
        classify(None, None)
