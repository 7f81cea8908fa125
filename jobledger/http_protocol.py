"""uvicorn's httptools protocol, sending each response's header block and body in one write.

uvicorn writes a response in two calls, the header block when the app sends
`http.response.start` and the body when it sends `http.response.body`, so every answer costs
two `send` system calls and, with `TCP_NODELAY`, two packets. Here the connection's transport
is wrapped: a small write (the header block) is held until the next write of the same
connection, which goes out joined to it, or until the loop's next iteration, whichever comes
first. A response with a body thus leaves in one call; one without (204, HEAD, `100
Continue`) leaves one iteration later, not held any longer. An empty Starlette GET under wrk
(32 connections, 4 runs each way) took 34-36 us of the server's CPU per request instead of
40-47 us, and 28,400-29,500 requests/s instead of 21,000-25,100; `/healthz` of `ledger serve`,
which does more per request, about 2 us less of the machine's CPU (docs/operations.md).

At most one write of at most `HOLD_BYTES` is held; larger writes go out at once (after what
is held), so streaming keeps its flow control and nothing waits behind a large body. Closing
the connection sends what is held first.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HOLD_BYTES = 4096  # a header block is a few hundred bytes


class CoalescingTransport:
    """A transport whose small writes wait for the next write or the next loop iteration;
    everything else is the wrapped transport's."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + bytes(data))
            return
        if len(data) <= HOLD_BYTES and not self._transport.is_closing():
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
            return
        self._transport.write(data)

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def flush(self) -> None:
        """Send what is held now (called by the loop one iteration after it was held); dropped
        when the connection went away meanwhile, as the transport would have dropped it."""
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, pause_reading...
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """`uvicorn.run(..., http=CoalescingHttpToolsProtocol)`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        coalescing = CoalescingTransport(transport, self.loop)
        super().connection_made(coalescing)  # type: ignore[arg-type]
