"""`BodyLimit`: refuse request bodies over the limit (413) before anything parses them.

A declared `Content-Length` over the limit is refused before the app sees anything. Otherwise
the body is read (chunked bodies too, which declare no length) while counting, and refused as
soon as the count passes the limit; a body within it is handed to the app in one piece. The limit
is small (256 KiB by default), so buffering it costs little and keeps parsing simple.

Before a 413 the rest of an oversized body is read and discarded, up to `DRAIN_MAX` bytes, so
that an ordinary client which sends its whole body before reading the answer gets the 413
instead of a connection reset; past that the connection is closed.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import Problem, problem_response

DRAIN_MAX = 4 * 1024 * 1024


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send, drain=declared <= DRAIN_MAX)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away; there is no one to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            more = bool(message.get("more_body", False))
            if size > self.max_bytes:
                await self._refuse(scope, receive, send, drain=more, already=size)
                return
            chunks.append(chunk)
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for a disconnect, as usual

        await self.app(scope, replay, send)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, *, drain: bool, already: int = 0
    ) -> None:
        if drain:
            more, size = True, already
            while more and size <= DRAIN_MAX:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                size += len(message.get("body", b""))
                more = bool(message.get("more_body", False))
        problem = Problem(
            "body-too-large",
            f"The request body is over the limit of {self.max_bytes} bytes; it was not "
            "processed and nothing was written.",
            extra={"max_body_bytes": self.max_bytes},
            headers={"Connection": "close"},
        )
        await problem_response(problem)(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server rejects a malformed length before we see it
    return None
