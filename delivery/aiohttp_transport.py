"""The sender's HTTP transport: aiohttp's connection pool behind the httpx API, SSRF-guarded.

Why: httpx's own pool (httpcore) rescans every pooled connection on each request
(encode/httpx#3215); with 64 deliveries in flight the sender's event loop spent ~60% of its
time there, and `bench.http_clients` measures it (docs/performance.md: httpx with a pool of 64
manages a few dozen to a few hundred requests/s at a p99 of seconds, aiohttp thousands at a
p99 of milliseconds). The `httpx-aiohttp` package does the same job, but maps a refused
connection to `httpx.ConnectTimeout` (its exception table checks the base class first), which
would turn our `connection` failures into `timeout`s; so this module is ours.

What it guarantees, like `delivery.targets.GuardedTransport` (which stays the reference
transport of that module's tests):
- every URL is checked before anything else (`TargetPolicy.check_url`): scheme, user info,
  IP literals, metadata names;
- every new connection resolves the host once through the policy (`resolve_and_check`: refused
  if ANY answer is forbidden) and aiohttp connects only to the addresses it returned (aiohttp's
  DNS cache is off, so every new connection is checked again); TLS keeps the host name for SNI
  and certificate checks; IP literals skip the resolver but were checked by `check_url`;
- no redirects, no environment proxies, no cookies kept between requests, nothing inflated;
- the pool holds at most `limits.max_connections` connections (size it to the concurrency).

Errors come back as httpx's: `httpx.ConnectError` (refused, DNS failure, TLS, with the cause
chained so `delivery.outcome.classify` finds an `ssl.SSLError`), `httpx.ConnectTimeout` /
`httpx.ReadTimeout`, `httpx.RemoteProtocolError` (the peer closed or spoke bad HTTP),
`httpx.ReadError` / `httpx.WriteError`; `RefusedTarget` as itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDict

from delivery.targets import DEFAULT_LIMITS, RefusedTarget, TargetPolicy

CHUNK = 16 * 1024
# For `open`, whose caller bounds the whole exchange (aiohttp's default would be 5 minutes).
NO_TIMERS = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=None, sock_read=None)


class CheckedResolver(AbstractResolver):
    """aiohttp's resolver, answering only addresses the policy has just checked."""

    def __init__(self, policy: TargetPolicy) -> None:
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await self._policy.resolve_and_check(host, port)
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in addresses
        ]

    async def close(self) -> None:
        return None


@contextlib.contextmanager
def as_httpx_errors() -> Iterator[None]:
    """aiohttp's exceptions as httpx's (the cause kept), the most specific first."""
    try:
        yield
    except (RefusedTarget, httpx.HTTPError, asyncio.CancelledError):
        raise
    except aiohttp.ConnectionTimeoutError as error:
        raise httpx.ConnectTimeout(str(error) or "connect timed out") from error
    except (aiohttp.SocketTimeoutError, aiohttp.ServerTimeoutError, TimeoutError) as error:
        raise httpx.ReadTimeout(str(error) or "read timed out") from error
    except aiohttp.ClientConnectorError as error:  # refused, unreachable, DNS, TLS
        raise httpx.ConnectError(str(error)) from error
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientResponseError) as error:
        raise httpx.RemoteProtocolError(str(error) or type(error).__name__) from error
    except aiohttp.ClientPayloadError as error:
        raise httpx.ReadError(str(error) or type(error).__name__) from error
    except (aiohttp.ClientError, OSError) as error:
        raise httpx.ReadError(str(error) or type(error).__name__) from error


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with as_httpx_errors():
            async for chunk in self._response.content.iter_chunked(CHUNK):
                yield chunk

    async def aclose(self) -> None:
        # A body read to its end: the connection goes back to the pool; else it is closed
        # (whatever the peer still sends is not read).
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class GuardedAiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport over one aiohttp session that only talks to allowed targets.

    Use it as `httpx.AsyncClient(transport=GuardedAiohttpTransport(policy, limits=...))` and
    close the client on the loop that used it (the session is made on first use)."""

    def __init__(
        self,
        policy: TargetPolicy,
        *,
        verify: ssl.SSLContext | bool = True,
        limits: httpx.Limits = DEFAULT_LIMITS,
    ) -> None:
        self.policy = policy
        self._ssl = httpx.create_ssl_context(verify=verify, trust_env=False)
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None

    def _make_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._limits.max_connections or 0,
            limit_per_host=0,
            use_dns_cache=False,  # every new connection is resolved and checked
            resolver=CheckedResolver(self.policy),
            ssl=self._ssl,
            keepalive_timeout=self._limits.keepalive_expiry or 5.0,
        )
        return aiohttp.ClientSession(
            connector=connector,
            trust_env=False,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None),
            # on the session, not per request: aiohttp rebuilds a per-request set every time
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Accept", "Content-Type"),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.policy.check_url(str(request.url))
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        headers = CIMultiDict(request.headers.multi_items())
        headers.popall("transfer-encoding", None)
        body = await request.aread()
        with as_httpx_errors():
            response = await self._request(
                request.method,
                str(request.url),
                headers,
                body,
                aiohttp.ClientTimeout(
                    total=None,
                    connect=timeouts.get("pool"),
                    sock_connect=timeouts.get("connect"),
                    sock_read=timeouts.get("read"),
                ),
            )
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode("latin-1", errors="replace")
        return httpx.Response(
            status_code=response.status,
            headers=list(response.raw_headers),
            stream=_Body(response),
            request=request,
            extensions=extensions,
        )

    async def open(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> aiohttp.ClientResponse:
        """The sender's path (`delivery.http.post`): the same checks and the same request as
        through an `httpx.AsyncClient`, without building httpx's request and response around
        it (the sender's CPU per webhook went from 1.9 to 1.5-1.7 ms in
        `python -m bench.delivery_figures throughput`).
        No deadline of its own: the caller bounds the whole exchange, reading the response
        included (`delivery.http.post` does, with one `asyncio.timeout`). aiohttp's per-phase
        timers, each as long as that deadline, could never fire first; without them a post at
        64 in flight took 96-108 us of CPU instead of 101-124 (3 runs of 20,000 each way).
        Errors are httpx's, as `handle_async_request` raises them; close or release the
        response."""
        self.policy.check_url(url)
        with as_httpx_errors():
            return await self._request(method, url, CIMultiDict(headers), body, NO_TIMERS)

    async def _request(
        self,
        method: str,
        url: str,
        headers: CIMultiDict[str],
        body: bytes,
        timeout: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        if self._session is None or self._session.closed:
            self._session = self._make_session()
        return await self._session.request(
            method,
            url,
            headers=headers,
            data=body or None,
            allow_redirects=False,
            compress=None,
            timeout=timeout,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
