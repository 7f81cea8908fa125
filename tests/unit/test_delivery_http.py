"""One webhook POST (`delivery.http.post`) over `httpx.MockTransport`: exact bytes out, bounded
answer in, every failure named by its outcome class; and the automatic-disabling rule."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from delivery.disabling import Streak, disable_reason
from delivery.http import (
    MAX_HEADER_CHARS,
    MAX_RESPONSE_HEADERS,
    RESPONSE_BODY_LIMIT,
    Exchange,
    post,
    receipt,
)
from delivery.signing import webhook_headers
from delivery.targets import GuardedTransport, TargetPolicy

SECRET = "whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="
BODY = b'{"type": "job.published", "data": {"job_id": "j"}}'
HEADERS = webhook_headers([SECRET], "msg_1", 1_700_000_000, BODY)


def send(
    handler: Callable[[httpx.Request], Any],
    *,
    url: str = "https://hooks.example.com/in",
    timeout: float = 2.0,
) -> Exchange:
    async def run() -> Exchange:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await post(client, url, headers=HEADERS, body=BODY, timeout=timeout)

    return asyncio.run(run())


def test_success_sends_the_exact_bytes_and_signed_headers():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    exchange = send(handler)
    assert exchange.succeeded and exchange.error is None and exchange.status_code == 204
    (request,) = seen
    assert request.method == "POST" and request.content == BODY
    for name, value in HEADERS.items():
        assert request.headers[name] == value
        assert exchange.request_headers[name] == value
    assert request.headers["accept-encoding"] == "identity"
    assert exchange.latency_ms >= 0


def test_a_huge_answer_is_read_only_up_to_4_kib_and_never_buffered():
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        while pulled < 10_000:  # bounded, in case the reader never stops
            pulled += 1
            yield b"y" * 1000

    exchange = send(lambda request: httpx.Response(500, content=endless()))
    assert exchange.response_body == "y" * RESPONSE_BODY_LIMIT
    assert pulled <= 5
    assert exchange.error_class == "http_status"
    assert exchange.error == "the endpoint answered 500 Internal Server Error"


def test_response_headers_are_bounded():
    headers = [(f"x-h{i}", "v" * 2000) for i in range(100)] + [("x-h0", "again")]
    exchange = send(lambda request: httpx.Response(200, headers=headers))
    assert len(exchange.response_headers) == MAX_RESPONSE_HEADERS
    assert all(len(v) <= MAX_HEADER_CHARS for v in exchange.response_headers.values())


@pytest.mark.parametrize(
    ("answer", "error_class", "message"),
    [
        (
            httpx.Response(302, headers={"location": "http://169.254.169.254/"}),
            "redirect",
            "the endpoint answered 302 Found to http://169.254.169.254/ "
            "(redirects are not followed)",
        ),
        (httpx.Response(429), "rate_limited", "the endpoint answered 429 Too Many Requests"),
        (httpx.Response(410), "http_status", "the endpoint answered 410 Gone"),
        (httpx.ConnectError("refused"), "connection", "ConnectError: refused"),
        (httpx.ReadTimeout("slow"), "timeout", "no answer within 2 s"),
    ],
)
def test_failures_are_classified_and_never_followed(answer, error_class, message):
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url)
        if isinstance(answer, Exception):
            raise answer
        return answer

    exchange = send(handler)
    assert (exchange.error_class, exchange.error) == (error_class, message)
    assert len(calls) == 1


def test_the_whole_exchange_has_one_deadline():
    async def stalls(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    exchange = send(stalls, timeout=0.1)
    assert (exchange.error_class, exchange.status_code) == ("timeout", None)
    assert exchange.latency_ms < 2000


def test_a_refused_target_is_a_failed_attempt_not_an_exception():
    async def run() -> Exchange:
        transport = GuardedTransport(TargetPolicy(allow_private=False))
        async with httpx.AsyncClient(transport=transport) as client:
            return await post(
                client, "http://127.0.0.1:8080/x", headers=HEADERS, body=BODY, timeout=1
            )

    exchange = asyncio.run(run())
    assert exchange.error_class == "refused_target"
    assert exchange.error == "target refused: plain http is not allowed; use https"


def test_receipt_has_exactly_the_keys_the_projections_read():
    exchange = send(lambda request: httpx.Response(201, text="ok"))
    at = datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
    made = receipt(exchange, attempted_at=at, webhook_timestamp=1_700_000_000)
    assert made == {
        "attempted_at": "2026-01-02T03:04:05.600000Z",
        "url": "https://hooks.example.com/in",
        "webhook_timestamp": 1_700_000_000,
        "status_code": 201,
        "latency_ms": exchange.latency_ms,
        "response_headers": exchange.response_headers,
        "response_body": "ok",
        "error_class": None,
        "error": None,
    }


# -- automatic disabling --

NOW = datetime(2026, 1, 10, tzinfo=UTC)
DAY = 86400.0


def streak(**fields: Any) -> Streak:
    base: dict[str, Any] = {
        "endpoint_state": "active",
        "consecutive_failures": 3,
        "failing_since": NOW - timedelta(days=5),
        "consecutive_dead_letters": 0,
        "position": 10,
    }
    return Streak(**{**base, **fields})


def test_failing_for_the_whole_period_disables():
    assert disable_reason(streak(), NOW, after_seconds=5 * DAY, after_dead_letters=0) == (
        "every delivery attempt failed for 5.0 days (since 2026-01-05T00:00:00Z; the limit is "
        "5.0 days)"
    )
    younger = streak(failing_since=NOW - timedelta(days=4.9))
    assert disable_reason(younger, NOW, after_seconds=5 * DAY, after_dead_letters=0) is None
    healthy = streak(consecutive_failures=0, failing_since=None)
    assert disable_reason(healthy, NOW, after_seconds=5 * DAY, after_dead_letters=0) is None


def test_consecutive_dead_letters_disable_only_when_the_rule_is_on():
    lettered = streak(failing_since=NOW, consecutive_dead_letters=3)
    assert disable_reason(lettered, NOW, after_seconds=5 * DAY, after_dead_letters=0) is None
    assert disable_reason(lettered, NOW, after_seconds=5 * DAY, after_dead_letters=4) is None
    assert disable_reason(lettered, NOW, after_seconds=5 * DAY, after_dead_letters=3) == (
        "3 deliveries in a row were dead-lettered (the limit is 3)"
    )


def test_the_attempt_just_recorded_counts_even_when_the_view_lags():
    fresh = streak(consecutive_failures=0, failing_since=None, position=10)
    lagging = fresh.including(position=11, attempted_at=NOW, dead_lettered=True)
    assert (lagging.consecutive_failures, lagging.failing_since) == (1, NOW)
    assert lagging.consecutive_dead_letters == 1
    applied = streak(position=11)
    assert applied.including(position=11, attempted_at=NOW, dead_lettered=True) == applied
