"""One webhook HTTP request: POST the exact body bytes with the signed headers, bounded in time
and in what is read back, and say what happened (`Exchange`, `receipt`).

- The caller passes the sender's transport (`delivery.aiohttp_transport`), used directly, or
  an `httpx.AsyncClient` (tests pass one over `httpx.MockTransport` or a real transport); both
  send the same request and report the same way (tests/e2e/test_aiohttp_transport.py runs
  its cases both ways).
- Redirects are never followed (`follow_redirects=False`): a 3xx is a failed attempt.
- The whole exchange (DNS, connect, send, the status line, headers and the body excerpt) must
  finish within `timeout` seconds; httpx's own timeouts are per phase, so a receiver dripping
  bytes is cut off by an overall deadline too.
- At most `RESPONSE_BODY_LIMIT` bytes of the response body are read, streamed; a receiver that
  sends megabytes costs us 4 KiB and a closed connection. The body is asked for and read
  uncompressed (`accept-encoding: identity`, raw bytes): nothing is inflated.
- Response headers are kept bounded (`MAX_RESPONSE_HEADERS` names, `MAX_HEADER_CHARS` each).
- Errors become outcome classes (`delivery.outcome.classify`): transport errors and timeouts on
  one side, non-2xx statuses on the other; a refused target is `refused_target`.

What it must never do: retry, sleep between attempts, read the ledger or a clock for decisions
(the attempt time is passed in; latency is measured with a monotonic counter), or raise for
an outcome the receiver caused.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from delivery.aiohttp_transport import GuardedAiohttpTransport, as_httpx_errors
from delivery.outcome import classify
from delivery.retry import FailureClass
from delivery.targets import RefusedTarget

RESPONSE_BODY_LIMIT = 4096
MAX_RESPONSE_HEADERS = 32
MAX_HEADER_CHARS = 512
METHOD = "POST"
# Asked for explicitly so the excerpt is readable text and nothing is decompressed.
EXTRA_HEADERS = {"accept-encoding": "identity"}
# What an httpx client adds to every request (sent the same way without one: `_post_direct`).
DEFAULT_HEADERS = {
    "accept": "*/*",
    "accept-encoding": "gzip, deflate",
    "connection": "keep-alive",
    "user-agent": f"python-httpx/{httpx.__version__}",
}


@dataclass(frozen=True)
class Exchange:
    """What one attempt sent and got back."""

    method: str
    url: str
    request_headers: dict[str, str]
    body: bytes
    status_code: int | None
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: str = ""
    latency_ms: float = 0.0
    error_class: FailureClass | None = None
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.error_class is None


async def post(
    client: httpx.AsyncClient | GuardedAiohttpTransport,
    url: str,
    *,
    headers: Mapping[str, str],
    body: bytes,
    timeout: float,
) -> Exchange:
    """POST `body` to `url` once; never raises for what the receiver or the network did.

    `client` is an httpx client, or the sender's transport itself (`_post_direct`: the same
    request on the wire, about a fifth less CPU)."""
    if isinstance(client, GuardedAiohttpTransport):
        return await _post_direct(client, url, headers=headers, body=body, timeout=timeout)
    sent_headers = {**headers, **EXTRA_HEADERS}
    answer = _Answer(dict(sent_headers))
    with answer.failures():
        request = client.build_request(
            METHOD, url, content=body, headers=sent_headers, timeout=httpx.Timeout(timeout)
        )
        answer.request_headers = {name.lower(): value for name, value in request.headers.items()}
        async with asyncio.timeout(timeout):
            response = await client.send(request, stream=True, follow_redirects=False)
            try:
                answer.status = response.status_code
                answer.reason = response.reason_phrase
                answer.location = response.headers.get("location")
                answer.headers = bounded_headers(response.headers.multi_items())
                if response.is_stream_consumed:  # read already (an in-memory transport)
                    answer.keep(response.content)
                else:
                    async for chunk in response.aiter_raw():
                        if answer.keep(chunk):
                            break
            finally:
                await response.aclose()
    return answer.exchange(url, body, timeout)


async def _post_direct(
    transport: GuardedAiohttpTransport,
    url: str,
    *,
    headers: Mapping[str, str],
    body: bytes,
    timeout: float,
) -> Exchange:
    """`post` straight through the transport: the headers httpx would have sent (its defaults,
    then ours, host and length), the same deadline, excerpt and error classes."""
    answer = _Answer({**DEFAULT_HEADERS, **headers, **EXTRA_HEADERS})
    with answer.failures():
        host, target = _normalised(url)
        answer.request_headers = {
            "host": host,
            **answer.request_headers,
            "content-length": str(len(body)),
        }
        async with asyncio.timeout(timeout):
            response = await transport.open(METHOD, target, answer.request_headers, body)
            try:
                answer.status = response.status
                answer.reason = response.reason or ""
                answer.location = response.headers.get("location")
                answer.headers = bounded_headers(response.headers.items())
                with as_httpx_errors():
                    async for chunk in response.content.iter_chunked(RESPONSE_BODY_LIMIT):
                        if answer.keep(chunk):
                            break
            finally:
                if response.content.at_eof():
                    response.release()  # read to its end: the connection is kept
                else:
                    response.close()
    return answer.exchange(url, body, timeout)


@functools.lru_cache(maxsize=4096)
def _normalised(url: str) -> tuple[str, str]:
    """(Host header, URL) as httpx sends them (IDNA, default port dropped); remembered: the
    sender posts to its endpoints' few URLs again and again (`httpx.InvalidURL` is raised
    each time, not kept)."""
    parsed = httpx.URL(url)
    return parsed.netloc.decode("ascii"), str(parsed)


@dataclass
class _Answer:
    """What one attempt has sent and got back so far."""

    request_headers: dict[str, str]
    status: int | None = None
    reason: str = ""
    location: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    excerpt: bytearray = field(default_factory=bytearray)
    failure: BaseException | None = None
    started: float = field(default_factory=time.perf_counter)

    def keep(self, chunk: bytes) -> bool:
        """Keep what fits of `chunk` in the excerpt; True once it is full."""
        self.excerpt += chunk[: RESPONSE_BODY_LIMIT - len(self.excerpt)]
        return len(self.excerpt) >= RESPONSE_BODY_LIMIT

    @contextlib.contextmanager
    def failures(self) -> Iterator[None]:
        """What the target or the network did, kept as this attempt's failure (not raised)."""
        try:
            yield
        except httpx.InvalidURL as error:
            self.failure = RefusedTarget(f"not a valid URL ({error})")
        except (
            httpx.TransportError,
            OSError,
            TimeoutError,
            RefusedTarget,
            ssl.SSLError,
        ) as error:
            self.failure = error

    def exchange(self, url: str, body: bytes, timeout: float) -> Exchange:
        latency_ms = round((time.perf_counter() - self.started) * 1000.0, 3)
        error_class = classify(self.status, self.failure)
        return Exchange(
            method=METHOD,
            url=url,
            request_headers=self.request_headers,
            body=body,
            status_code=self.status,
            response_headers=self.headers,
            response_body=bytes(self.excerpt).decode("utf-8", errors="replace"),
            latency_ms=latency_ms,
            error_class=error_class,
            error=_message(
                error_class, self.status, self.reason, self.location, self.failure, timeout
            ),
        )


def bounded_headers(items: Any) -> dict[str, str]:
    """At most `MAX_RESPONSE_HEADERS` lower-case names; repeated ones joined with ", ";
    each value cut at `MAX_HEADER_CHARS`."""
    kept: dict[str, str] = {}
    for name, value in items:
        key = str(name).lower()[:MAX_HEADER_CHARS]
        if key in kept:
            kept[key] = f"{kept[key]}, {value}"[:MAX_HEADER_CHARS]
        elif len(kept) < MAX_RESPONSE_HEADERS:
            kept[key] = str(value)[:MAX_HEADER_CHARS]
    return kept


def _message(
    error_class: FailureClass | None,
    status: int | None,
    reason: str,
    location: str | None,
    failure: BaseException | None,
    timeout: float,
) -> str | None:
    if error_class is None:
        return None
    if error_class == "timeout":
        return f"no answer within {timeout:g} s"
    if error_class == "refused_target":
        refused = failure if isinstance(failure, RefusedTarget) else None
        cause = failure
        while refused is None and cause is not None:
            cause = cause.__cause__ or cause.__context__
            refused = cause if isinstance(cause, RefusedTarget) else None
        return f"target refused: {refused.reason if refused else failure}"
    if failure is not None:
        text = str(failure).strip()
        return f"{type(failure).__name__}: {text}" if text else type(failure).__name__
    answered = f"the endpoint answered {status} {reason}".rstrip()
    if error_class == "redirect":
        where = f" to {location[:MAX_HEADER_CHARS]}" if location else ""
        return f"{answered}{where} (redirects are not followed)"
    return answered


def utc_iso(value: datetime) -> str:
    """ISO 8601 in UTC with a `Z`, fixed width (microseconds): sorts as text."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def receipt(
    exchange: Exchange, *, attempted_at: datetime, webhook_timestamp: int
) -> dict[str, Any]:
    """The attempt's receipt as the ledger records it (the projections read these keys)."""
    return {
        "attempted_at": utc_iso(attempted_at),
        "url": exchange.url,
        "webhook_timestamp": webhook_timestamp,
        "status_code": exchange.status_code,
        "latency_ms": exchange.latency_ms,
        "response_headers": dict(exchange.response_headers),
        "response_body": exchange.response_body,
        "error_class": exchange.error_class,
        "error": exchange.error,
    }
