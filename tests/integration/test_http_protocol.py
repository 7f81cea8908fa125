"""`ledger serve`'s HTTP protocol (`jobledger.http_protocol`) in a real uvicorn server on
127.0.0.1: every answer is intact, and a response with a body leaves in one write to the
socket's transport where uvicorn's own protocol makes two."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from jobledger.http_protocol import CoalescingHttpToolsProtocol
from tests.fakes.server import ThreadServer, config, serve_in_thread, stop_thread

LARGE = b"y" * 200_000


class Counted:
    """The socket's transport, counting the writes that reach it."""

    def __init__(self, transport: asyncio.Transport, writes: list[bytes]) -> None:
        self._transport = transport
        self._writes = writes

    def write(self, data: bytes) -> None:
        self._writes.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def counting(protocol: type[HttpToolsProtocol], writes: list[bytes]) -> type[HttpToolsProtocol]:
    class CountingProtocol(protocol):  # type: ignore[valid-type, misc]
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(Counted(transport, writes))

    return CountingProtocol


def app() -> Starlette:
    async def small(request: Request) -> Response:
        return JSONResponse({"echo": (await request.body()).decode()}, status_code=201)

    async def empty(request: Request) -> Response:
        return Response(status_code=204)

    async def large(request: Request) -> Response:
        return Response(LARGE, media_type="application/octet-stream")

    async def stream(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(3):
                yield f"chunk {i};".encode()
                await asyncio.sleep(0.01)

        return StreamingResponse(chunks(), media_type="text/plain")

    return Starlette(
        routes=[
            Route("/small", small, methods=["POST"]),
            Route("/empty", empty, methods=["GET", "HEAD"]),
            Route("/large", large),
            Route("/stream", stream),
        ]
    )


@contextmanager
def served(protocol: type[HttpToolsProtocol], writes: list[bytes]) -> Iterator[str]:
    server = ThreadServer(config(app(), http=counting(protocol, writes)))
    base_url, thread = serve_in_thread(server, "http-protocol")
    try:
        yield base_url
    finally:
        stop_thread(server, thread, "http-protocol")


@pytest.fixture
def coalescing() -> Iterator[tuple[str, list[bytes]]]:
    writes: list[bytes] = []
    with served(CoalescingHttpToolsProtocol, writes) as base_url:
        yield base_url, writes


def test_each_response_with_a_body_leaves_in_one_write(
    coalescing: tuple[str, list[bytes]],
) -> None:
    base_url, writes = coalescing
    with httpx.Client(base_url=base_url) as client:  # one keep-alive connection
        for i in range(5):
            answer = client.post("/small", content=f"request {i}")
            assert answer.status_code == 201
            assert answer.json() == {"echo": f"request {i}"}
    assert len(writes) == 5
    assert all(w.startswith(b"HTTP/1.1 201 Created\r\n") for w in writes)
    assert all(w.endswith(b'"}') for w in writes)


def test_uvicorns_own_protocol_writes_headers_and_body_apart() -> None:
    """What the protocol is for: if uvicorn ever joins them itself, it is no longer needed."""
    writes: list[bytes] = []
    with (
        served(HttpToolsProtocol, writes) as base_url,
        httpx.Client(base_url=base_url) as client,
    ):
        for i in range(5):
            assert client.post("/small", content=f"request {i}").status_code == 201
    assert len(writes) == 10


def test_answers_without_a_body_large_ones_and_streams_are_intact(
    coalescing: tuple[str, list[bytes]],
) -> None:
    base_url, writes = coalescing
    with httpx.Client(base_url=base_url) as client:
        empty = client.get("/empty")
        assert empty.status_code == 204 and empty.content == b""
        head = client.head("/empty")
        assert head.status_code == 204
        large = client.get("/large")
        assert large.status_code == 200 and large.content == LARGE
        streamed = client.get("/stream")
        assert streamed.status_code == 200
        assert streamed.text == "chunk 0;chunk 1;chunk 2;"
        again = client.post("/small", content="after all that")  # the connection still works
        assert again.json() == {"echo": "after all that"}
    assert b"".join(writes).count(b"HTTP/1.1 ") == 5
