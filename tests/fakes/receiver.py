"""A recording webhook receiver on 127.0.0.1: a Starlette app under uvicorn in a thread.

Every request is recorded (`Received`: wall and monotonic time, method, path, query, lower-case
headers, body bytes) before it is answered. Answers are scripted per path:

    receiver.script("/hooks/a", Reply(500), Reply(429, {"retry-after": "3"}), RESET,
                    slow(10), redirect("https://elsewhere.example"), then=Reply(204))

gives those answers to the next requests to /hooks/a in order, then `then` (default: the
receiver's `default`, a 200). `Reply.delay` waits (an `asyncio.sleep` that `stop()` cuts
short) before answering, for a client timeout; `RESET` aborts the TCP connection (an RST, no
answer at all).

Waiting is event-driven: `wait_for(count, timeout, path=...)` blocks on a condition variable
that every recorded request notifies, never a sleep loop. Start it with `with Receiver() as r:`,
`running_receiver(...)`, or the `webhook_receiver` fixture factory (`make(**options)`; every
receiver made is stopped when the test ends). Same thread-and-socket approach as
`tests/fakes/fake_pinterest.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.fakes.server import ThreadServer, config, serve_in_thread, stop_thread


@dataclass(frozen=True)
class Reply:
    """An HTTP answer, optionally given after `delay` seconds."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0


@dataclass(frozen=True)
class Reset:
    """Abort the connection with a TCP reset instead of answering."""


RESET = Reset()
Answer = Reply | Reset


def redirect(location: str, status: int = 307) -> Reply:
    return Reply(status, {"location": location})


def slow(seconds: float, then: Reply | None = None) -> Reply:
    """`then` (default a 200), answered after `seconds`."""
    return replace(then or Reply(), delay=seconds)


@dataclass(frozen=True)
class Received:
    at: float  # time.time() on arrival
    monotonic: float  # time.monotonic() on arrival, for measuring gaps between attempts
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class _Server(ThreadServer):
    stopping: asyncio.Event | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.stopping = asyncio.Event()
        await super().startup(sockets)

    def stop(self) -> None:
        """Exit without waiting for slow answers, which are woken (not cancelled) to finish."""
        self.should_exit = True
        self.force_exit = True
        if self.loop is not None and self.stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already closed
                self.loop.call_soon_threadsafe(self.stopping.set)

    async def pause(self, seconds: float) -> None:
        """`asyncio.sleep(seconds)`, cut short when the receiver stops."""
        assert self.stopping is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)


class Receiver:
    """A webhook endpoint that records what it gets and answers as scripted."""

    def __init__(self, default: Answer | None = None) -> None:
        self.default: Answer = default or Reply()
        self.base_url = ""
        self._received: list[Received] = []
        self._scripts: dict[str, list[Answer]] = {}
        self._path_defaults: dict[str, Answer] = {}
        self._changed = threading.Condition()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- test-facing --

    def url(self, path: str = "/") -> str:
        return self.base_url + path

    def script(self, path: str, *answers: Answer, then: Answer | None = None) -> None:
        """Answer the next requests to `path` with `answers` in order, then with `then`."""
        with self._changed:
            self._scripts.setdefault(path, []).extend(answers)
            if then is not None:
                self._path_defaults[path] = then

    @property
    def requests(self) -> list[Received]:
        with self._changed:
            return list(self._received)

    def requests_for(self, path: str) -> list[Received]:
        with self._changed:
            return [r for r in self._received if r.path == path]

    def wait_for(
        self, count: int, timeout: float = 10.0, *, path: str | None = None
    ) -> list[Received]:
        """Block until `count` requests (to `path`, if given) arrived; return them all."""

        def matching() -> list[Received]:
            return [r for r in self._received if path is None or r.path == path]

        with self._changed:
            if not self._changed.wait_for(lambda: len(matching()) >= count, timeout):
                got = matching()
                where = f" to {path}" if path else ""
                raise AssertionError(
                    f"expected {count} requests{where} within {timeout} s, got {len(got)}: "
                    f"{[f'{r.method} {r.path}' for r in got]}"
                )
            return matching()

    # -- the app --

    def app(self) -> Starlette:
        methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
        return Starlette(routes=[Route("/{path:path}", self._endpoint, methods=methods)])

    def _next_answer(self, path: str) -> Answer:
        script = self._scripts.get(path)
        if script:
            return script.pop(0)
        return self._path_defaults.get(path, self.default)

    async def _endpoint(self, request: Request) -> Response:
        body = await request.body()
        received = Received(
            at=time.time(),
            monotonic=time.monotonic(),
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            headers={name.lower(): value for name, value in request.headers.items()},
            body=body,
        )
        with self._changed:
            self._received.append(received)
            answer = self._next_answer(received.path)
            self._changed.notify_all()
        if isinstance(answer, Reset):
            return _ResetResponse()
        if answer.delay and self._server is not None:
            await self._server.pause(answer.delay)
        return Response(answer.body, answer.status, headers=dict(answer.headers))

    # -- lifecycle --

    def start(self) -> Receiver:
        # The standard asyncio loop and h11, whatever is installed: `RESET` reaches the socket
        # through asyncio's transport (uvloop's cannot be given SO_LINGER from here).
        server = _Server(config(self.app(), lifespan="off", loop="asyncio", http="h11"))
        self._server = server
        self.base_url, self._thread = serve_in_thread(server, "webhook-receiver")
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.stop()
            stop_thread(self._server, self._thread, "the webhook receiver")

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class _ResetResponse(Response):
    """Closes the TCP connection with a reset instead of sending anything.

    uvicorn's `receive` is a bound method of its request cycle, which holds the transport
    (Starlette passes `receive` through unchanged); SO_LINGER 0 turns the close into an RST.
    """

    def __init__(self) -> None:
        super().__init__(b"")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = getattr(getattr(receive, "__self__", None), "transport", None)
        if not isinstance(transport, asyncio.Transport):
            raise RuntimeError("cannot reach the connection to reset it")
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        # Wait for uvicorn to see the disconnect, so it does not report a missing answer.
        while (await receive())["type"] != "http.disconnect":
            pass


@contextmanager
def running_receiver(default: Answer | None = None) -> Iterator[Receiver]:
    with Receiver(default) as receiver:
        yield receiver


@pytest.fixture
def webhook_receiver() -> Iterator[Callable[..., Receiver]]:
    """Factory fixture: `make(default=...)` starts a receiver; all stop when the test ends.

    Register it with `from tests.fakes.receiver import webhook_receiver` in a conftest.py.
    """
    started: list[Receiver] = []

    def make(default: Answer | None = None) -> Receiver:
        receiver = Receiver(default).start()
        started.append(receiver)
        return receiver

    try:
        yield make
    finally:
        for receiver in started:
            receiver.stop()
