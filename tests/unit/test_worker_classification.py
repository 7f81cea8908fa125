"""The live publisher's failure classes (SPEC section 4) and header parsing, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from worker.publishers.classification import DEFAULT_RULES, Rule, classify
from worker.publishers.pinterest import parse_pinterest_time, retry_after_seconds


@pytest.mark.parametrize(
    ("status", "code", "message", "error_code", "retryable"),
    [
        (429, 8, "You have exceeded your rate limit. Try again later.", "rate_limited", True),
        (429, 8, "Your request was blocked as spam.", "spam_rejected", False),
        (429, None, "Pin looks like SPAM", "spam_rejected", False),
        (500, None, "Internal error", "server_error", True),
        (502, None, "Bad gateway", "server_error", True),
        (503, None, "", "server_error", True),
        (400, 1, "Invalid URL", "invalid_url", False),
        (400, 3, "Invalid parameters", "invalid_request", False),
        (401, 2, "Authentication failed.", "unauthorized", False),
        (403, 233, "Image too small", "invalid_media", False),
        (403, 235, "Image broken", "invalid_media", False),
        (403, 29, "You are not permitted to access that resource.", "forbidden", False),
        (404, 40, "Board not found.", "board_not_found", False),
        (404, 2031, "Section not found.", "section_not_found", False),
        (409, None, "Conflict", "client_error", False),
        (408, None, "Request timeout", "timeout", True),
        (302, None, "", "unexpected_response", False),
    ],
)
def test_default_table(status, code, message, error_code, retryable) -> None:
    found = classify(status, code, message)
    assert (found.error_code, found.retryable) == (error_code, retryable)


def test_rules_are_replaceable_data() -> None:
    lenient = (Rule((403, 403), 29, None, "forbidden_for_now", retryable=True), *DEFAULT_RULES)
    assert classify(403, 29, "not permitted", lenient).retryable is True
    assert classify(403, 29, "not permitted").retryable is False


def test_retry_after_seconds_date_and_ratelimit_reset() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds(httpx.Headers({"Retry-After": "7"})) == 7.0
    assert retry_after_seconds(httpx.Headers({"Retry-After": "0.5"})) == 0.5
    date = "Thu, 01 Jan 2026 12:00:30 GMT"
    assert retry_after_seconds(httpx.Headers({"Retry-After": date}), now) == 30.0
    assert retry_after_seconds(httpx.Headers({"x-ratelimit-reset": "12"})) == 12.0
    assert retry_after_seconds(httpx.Headers({"Retry-After": "soon"})) is None
    assert retry_after_seconds(httpx.Headers({})) is None


def test_pinterest_times_are_utc() -> None:
    expected = datetime(2026, 1, 1, 20, 10, 40, tzinfo=UTC)
    assert parse_pinterest_time("2026-01-01T20:10:40") == expected
    assert parse_pinterest_time("2026-01-01T20:10:40Z") == expected
    assert parse_pinterest_time("yesterday") is None
    assert parse_pinterest_time(None) is None
