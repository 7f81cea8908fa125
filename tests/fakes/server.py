"""uvicorn in a thread of the test process, on a free port of 127.0.0.1: the API under test, the
webhook receiver and the fake Pinterest all run this way.

`ThreadServer.shutdown` closes every connection uvicorn left open before the loop closes. uvicorn
asks the open connections to close once, right after it stops listening; a connection it
accepted just before (its protocol made in a task that ran after that request) or one still
answering when `force_exit` skips the wait was left open. Its socket was then closed by the
garbage collector, with a `ResourceWarning` that pytest (warnings are errors) pinned on
whichever later test happened to be running: about one CI run in seven failed that way.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import uvicorn


class ThreadServer(uvicorn.Server):
    loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        for connection in list(self.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        await asyncio.sleep(0)  # the aborts close their sockets in callbacks of the loop


def serve_in_thread(server: ThreadServer, name: str) -> tuple[str, threading.Thread]:
    """Start `server` on a new socket of 127.0.0.1 in a daemon thread; returns its base URL and
    the thread once it is accepting connections."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            sock.close()
            raise RuntimeError(f"{name} did not start")
        time.sleep(0.01)
    return base_url, thread


def stop_thread(server: ThreadServer, thread: threading.Thread, name: str) -> None:
    server.should_exit = True
    thread.join(timeout=15)
    if thread.is_alive():
        raise RuntimeError(f"{name} did not stop")


def config(app: Any, **options: Any) -> uvicorn.Config:
    return uvicorn.Config(app, log_level="warning", access_log=False, **options)
