"""What an attempt's result means for the retry schedule: one pure classification function.

What this module is for: mapping what a webhook POST produced (a status code, or the exception
httpx or the target guard raised) to one of `retry.FAILURE_CLASSES`, or None for a success.
Success is a 2xx answer; anything else is a failed attempt, redirects included (SPEC 6): the
sender never follows them, because a redirect could lead anywhere the target guard refused.

Transport problems and HTTP statuses are separate classes (httpx's `TransportError` versus an
answer with a bad status), and when both are known the error wins: a 200 whose body could not
be read within the timeout was not an answer within the timeout.

What it must never do: send, retry, sleep or read a clock; it only names what happened.
"""

from __future__ import annotations

import ssl

import httpx

from delivery.retry import FailureClass
from delivery.targets import RefusedTarget


def _causes(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def classify(status_code: int | None, error: BaseException | None) -> FailureClass | None:
    """The failure class of an attempt, or None when it succeeded (a 2xx and no error).

    Errors: `RefusedTarget` -> refused_target; an `ssl.SSLError` anywhere in the cause chain
    (httpx wraps certificate failures in `ConnectError`) -> tls; `httpx.TimeoutException` and
    `TimeoutError` -> timeout; any other `httpx.TransportError` or `OSError` -> connection.
    Statuses: 3xx -> redirect, 429 -> rate_limited, other non-2xx -> http_status.
    Any other exception is a bug in the sender, not an outcome: ValueError.
    """
    if error is not None:
        chain = _causes(error)
        if any(isinstance(cause, RefusedTarget) for cause in chain):
            return "refused_target"
        if any(isinstance(cause, ssl.SSLError) for cause in chain):
            return "tls"
        if isinstance(error, httpx.TimeoutException | TimeoutError):
            return "timeout"
        if isinstance(error, httpx.TransportError | OSError):
            return "connection"
        raise ValueError(f"not a delivery outcome: {type(error).__name__}") from error
    if status_code is None:
        raise ValueError("an attempt has a status code or an error")
    if 200 <= status_code <= 299:
        return None
    if 300 <= status_code <= 399:
        return "redirect"
    if status_code == 429:
        return "rate_limited"
    return "http_status"
