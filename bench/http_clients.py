"""HTTP clients side by side, and the local webhook receiver every delivery figure sends to.

`client_table(quick)` measures signed ~1 KB JSON POSTs to a receiver on 127.0.0.1 (aiohttp's
web server in its own process, answering 200) at concurrency 1 and 64, for:
- httpx.AsyncClient with its default limits (100 connections, 20 kept alive);
- httpx with the pool sized to the concurrency (max_connections = keep-alive = concurrency);
- httpx over the `httpx-aiohttp` transport (aiohttp's connector behind the httpx API);
- bare aiohttp (one ClientSession, connector limit = concurrency);
- the sender's own path (`delivery.http.post` straight through `delivery.sender.make_transport`:
  SSRF guard, aiohttp's pool, no httpx request or response objects).
Each runs for a fixed time after a short warm-up; requests/s and p99 latency are reported.

`python -m bench.http_clients receive PORT [--record]` is the receiver: `POST` anything -> 200;
with `--record` it keeps (arrival wall time, body) for `GET /_received` (figure 3);
`GET /_count` says how many POSTs it has answered (figure 2 waits on it).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
import orjson
from aiohttp import web

from bench.support import free_port, stop_child
from delivery.signing import message_id, new_secret, webhook_headers

CONCURRENCIES = (1, 64)
BODY = orjson.dumps({"type": "job.queued", "data": {"pad": "x" * 900}})


# -- the receiver (its own process) --


def _receiver_app(record: bool) -> web.Application:
    count = 0
    received: list[tuple[float, bytes]] = []

    async def accept(request: web.Request) -> web.Response:
        nonlocal count
        body = await request.read()
        if record:
            received.append((time.time(), body))
        count += 1
        return web.Response(text="ok")

    async def counted(request: web.Request) -> web.Response:
        return web.Response(text=str(count))

    async def dump(request: web.Request) -> web.Response:
        rows = [[t, orjson.Fragment(body)] for t, body in received]
        return web.Response(body=orjson.dumps(rows), content_type="application/json")

    app = web.Application(client_max_size=1 << 20)
    app.router.add_get("/_count", counted)
    app.router.add_get("/_received", dump)
    app.router.add_post("/{tail:.*}", accept)
    return app


def receive(port: int, record: bool) -> None:
    web.run_app(
        _receiver_app(record),
        host="127.0.0.1",
        port=port,
        access_log=None,
        print=None,
        handle_signals=True,
    )


@dataclass(frozen=True)
class Receiver:
    url: str  # POST here
    pid: int = 0  # the receiver's process
    # One client for the bench's polling: `httpx.get` builds a client and its TLS context per
    # call (10-15 ms of CPU); at 20 polls a second that took a fifth of a core.
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30), repr=False)

    @property
    def base(self) -> str:
        return self.url.rsplit("/", 1)[0]

    def count(self) -> int:
        return int(self.client.get(f"{self.base}/_count").text)

    def received(self) -> list[tuple[float, Any]]:
        """(arrival unix time, parsed body) of every POST, with `--record`."""
        return [(float(t), body) for t, body in self.client.get(f"{self.base}/_received").json()]


@contextmanager
def running_receiver(*, record: bool = False) -> Iterator[Receiver]:
    port = free_port()
    args = [sys.executable, "-m", "bench.http_clients", "receive", str(port)]
    if record:
        args.append("--record")
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL)  # noqa: S603 - our own command
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/_count", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the bench receiver did not start")
            time.sleep(0.05)
        receiver = Receiver(f"{base}/hooks", process.pid)
        try:
            yield receiver
        finally:
            receiver.client.close()
    finally:
        stop_child(process, timeout=10)


# -- the clients --

Send = Callable[[dict[str, str]], Awaitable[int]]


@dataclass(frozen=True)
class ClientResult:
    client: str
    concurrency: int
    rate: float
    p99_ms: float
    errors: int


def signed_headers(secret: str) -> dict[str, str]:
    msg = message_id(uuid.uuid4())
    return webhook_headers([secret], msg, int(time.time()), BODY)


async def drive(
    send: Send, concurrency: int, seconds: float, warmup: float
) -> tuple[float, float, int]:
    """Run `concurrency` loops of signed POSTs for `warmup + seconds`; returns requests/s and
    p99 (ms) over the measured part, and the errors."""
    secret = new_secret()
    latencies: list[float] = []
    errors = 0
    measuring = False
    stop_at = time.perf_counter() + warmup + seconds

    async def loop() -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                status = await send(signed_headers(secret))
                ok = status == 200
            except (httpx.HTTPError, aiohttp.ClientError, OSError):
                ok = False
            if measuring:
                latencies.append(time.perf_counter() - t0)
                errors += not ok

    tasks = [asyncio.create_task(loop()) for _ in range(concurrency)]
    await asyncio.sleep(warmup)
    measuring = True
    started = time.perf_counter()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    latencies.sort()
    p99 = latencies[max(int(len(latencies) * 0.99) - 1, 0)] * 1000 if latencies else 0.0
    return len(latencies) / elapsed, p99, errors


def _httpx_send(client: httpx.AsyncClient, url: str) -> Send:
    async def send(headers: dict[str, str]) -> int:
        response = await client.post(url, content=BODY, headers=headers)
        return response.status_code

    return send


async def _measure(name: str, url: str, concurrency: int, seconds: float) -> ClientResult:
    from httpx_aiohttp import AiohttpTransport

    from delivery.http import post
    from delivery.sender import make_transport

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    warmup = min(0.5, seconds / 3)
    if name == "aiohttp":
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def send(headers: dict[str, str]) -> int:
                async with session.post(url, data=BODY, headers=headers) as response:
                    await response.read()
                    return response.status

            rate, p99, errors = await drive(send, concurrency, seconds, warmup)
    elif name == "sender":  # the delivery sender's path, as it sends webhooks
        transport = make_transport(concurrency=concurrency, allow_private_targets=True)

        async def send_as_sender(headers: dict[str, str]) -> int:
            exchange = await post(transport, url, headers=headers, body=BODY, timeout=30)
            return exchange.status_code or 0

        try:
            rate, p99, errors = await drive(send_as_sender, concurrency, seconds, warmup)
        finally:
            await transport.aclose()
    else:
        if name == "httpx-default":
            client = httpx.AsyncClient()
        elif name == "httpx-tuned":
            client = httpx.AsyncClient(limits=limits)
        elif name == "httpx-aiohttp":
            client = httpx.AsyncClient(transport=AiohttpTransport(limits=limits))
        else:
            raise ValueError(f"unknown client {name}")
        async with client:
            rate, p99, errors = await drive(_httpx_send(client, url), concurrency, seconds, warmup)
    return ClientResult(name, concurrency, rate, p99, errors)


CLIENTS = {
    "httpx-default": "httpx.AsyncClient, default limits (100 / 20 kept alive)",
    "httpx-tuned": "httpx.AsyncClient, pool = keep-alive = concurrency",
    "httpx-aiohttp": "httpx over httpx-aiohttp's AiohttpTransport, limit = concurrency",
    "aiohttp": "bare aiohttp ClientSession, limit = concurrency",
    "sender": "the sender's path (delivery.http.post over its SSRF-guarded transport)",
}


def measure_clients(url: str, quick: bool) -> list[ClientResult]:
    seconds = 1.0 if quick else 4.0
    results = []
    for name in CLIENTS:
        for concurrency in CONCURRENCIES:
            results.append(asyncio.run(_measure(name, url, concurrency, seconds)))
    return results


def client_table(results: list[ClientResult]) -> str:
    by = {(r.client, r.concurrency): r for r in results}
    base = by.get(("aiohttp", 64))
    lines = [
        "| client | concurrency 1: req/s (p99) | concurrency 64: req/s (p99) | vs aiohttp at 64 |",
        "|---|---|---|---|",
    ]
    for name, description in CLIENTS.items():
        cells = []
        for concurrency in CONCURRENCIES:
            r = by.get((name, concurrency))
            errors = f", {r.errors} errors" if r and r.errors else ""
            cells.append(f"{r.rate:,.0f} ({r.p99_ms:.1f} ms{errors})" if r else "-")
        r64 = by.get((name, 64))
        ratio = f"{r64.rate / base.rate:.2f}x" if r64 and base and base.rate else "-"
        lines.append(f"| {description} | {cells[0]} | {cells[1]} | {ratio} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_clients")
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("receive", help="run the bench receiver")
    rec.add_argument("port", type=int)
    rec.add_argument("--record", action="store_true")
    table = sub.add_parser("table", help="measure the clients and print the table")
    table.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.command == "receive":
        receive(args.port, args.record)
        return 0
    with running_receiver() as receiver:
        print(client_table(measure_clients(receiver.url, args.quick)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
