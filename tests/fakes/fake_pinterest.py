"""A fake Pinterest API v5 on 127.0.0.1: a Starlette app under uvicorn in a thread.

Speaks `POST /v5/pins` and `GET /v5/boards/{board_id}/pins` (newest first, `page_size` and
`bookmark` paging) with Pinterest's error body `{code, message}` and an `x-pinterest-rid`
header on every answer. Every POST is recorded (`posts`), so a test can assert that a pin was
never posted twice. Behaviour per request is planned by the test:

- `plan(Planned(...), ...)`: the next POSTs answer these, in order (then 201 again). A planned
  answer may `create` the pin anyway (a timeout whose pin was in fact created) and may `delay`.
- `post_delay`: seconds every unplanned POST waits after creating the pin (slow upstream).
- `tokens`: accepted bearer tokens (anything else: 401 code 2); `boards`: known boards (None:
  every board exists; otherwise unknown boards answer 404 code 40).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.fakes.server import ThreadServer, config, serve_in_thread, stop_thread


@dataclass
class Planned:
    status: int = 201
    code: int | None = None
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    create: bool = False  # create the pin although the answer is not a 201


@dataclass
class FakePinterest:
    tokens: set[str] = field(default_factory=lambda: {"token-1"})
    boards: set[str] | None = None
    post_delay: float = 0.0
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    posts: list[dict[str, Any]] = field(default_factory=list)
    lists: int = 0
    pins: list[dict[str, Any]] = field(default_factory=list)
    _plan: list[Planned] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(10**15))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    base_url: str = ""
    _server: ThreadServer | None = None
    _thread: threading.Thread | None = None

    # -- test-facing --

    def plan(self, *answers: Planned) -> None:
        with self._lock:
            self._plan.extend(answers)

    def posts_for(self, title: str) -> list[dict[str, Any]]:
        with self._lock:
            return [p for p in self.posts if p["body"].get("title") == title]

    def pins_for(self, title: str) -> list[dict[str, Any]]:
        with self._lock:
            return [p for p in self.pins if p.get("title") == title]

    # -- the app --

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v5/pins", self._create_pin, methods=["POST"]),
                Route("/v5/boards/{board_id}/pins", self._list_pins, methods=["GET"]),
            ]
        )

    def _rid(self) -> dict[str, str]:
        return {"x-pinterest-rid": f"rid-{next(self._ids)}"}

    def _error(self, status: int, code: int | None, message: str, **headers: str) -> JSONResponse:
        return JSONResponse(
            {"code": code, "message": message}, status, headers={**self._rid(), **headers}
        )

    def _authorised(self, request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        return auth.startswith("Bearer ") and auth[len("Bearer ") :] in self.tokens

    async def _create_pin(self, request: Request) -> JSONResponse:
        body = await request.json()
        with self._lock:
            self.posts.append({"body": body, "headers": dict(request.headers), "at": time.time()})
            planned = self._plan.pop(0) if self._plan else None
        if not self._authorised(request):
            return self._error(401, 2, "Authentication failed.")
        if self.boards is not None and body.get("board_id") not in self.boards:
            return self._error(404, 40, "Board not found.")
        if planned is not None and planned.status != 201:
            if planned.create:
                self._store(body)
            if planned.delay:
                await asyncio.sleep(planned.delay)
            return self._error(planned.status, planned.code, planned.message, **planned.headers)
        pin = self._store(body)
        delay = planned.delay if planned is not None else self.post_delay
        if delay:
            await asyncio.sleep(delay)
        return JSONResponse(pin, 201, headers=self._rid())

    def _store(self, body: dict[str, Any]) -> dict[str, Any]:
        pin = {
            "id": str(next(self._ids)),
            "created_at": self.clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
            "board_id": body.get("board_id"),
            "title": body.get("title"),
            "description": body.get("description"),
            "link": body.get("link"),
            "alt_text": body.get("alt_text"),
        }
        with self._lock:
            self.pins.append(pin)
        return pin

    async def _list_pins(self, request: Request) -> JSONResponse:
        board_id = request.path_params["board_id"]
        with self._lock:
            self.lists += 1
        if not self._authorised(request):
            return self._error(401, 2, "Authentication failed.")
        if self.boards is not None and board_id not in self.boards:
            return self._error(404, 40, "Board not found.")
        size = min(int(request.query_params.get("page_size", "25")), 250)
        start = int(request.query_params.get("bookmark") or 0)
        with self._lock:
            mine = [p for p in reversed(self.pins) if p["board_id"] == board_id]
        page = mine[start : start + size]
        more = start + size < len(mine)
        return JSONResponse(
            {"items": page, "bookmark": str(start + size) if more else None}, headers=self._rid()
        )

    # -- lifecycle --

    def start(self) -> FakePinterest:
        self._server = ThreadServer(config(self.app(), lifespan="off"))
        self.base_url, self._thread = serve_in_thread(self._server, "fake Pinterest")
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            stop_thread(self._server, self._thread, "fake Pinterest")
