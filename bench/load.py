"""A load generator: aiohttp (the fastest client measured here, see ../shared/HTTPX.md) in
several processes, each with its share of the concurrency; returns throughput and latency
percentiles over all requests."""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import time
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None = None
    unique_header: str | None = None  # a header made unique per request (Idempotency-Key)


@dataclass(frozen=True)
class Result:
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


async def _worker(
    request: Request, concurrency: int, per_process: int, tag: str
) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(per_process))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def loop() -> None:
            nonlocal errors
            for i in counter:
                headers = dict(request.headers)
                if request.unique_header:
                    headers[request.unique_header] = f"{tag}-{i}"
                t0 = time.perf_counter()
                async with session.request(
                    request.method, request.url, headers=headers, data=request.body
                ) as response:
                    await response.read()
                    if response.status >= 400:
                        errors += 1
                latencies.append(time.perf_counter() - t0)

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - started


def _process(args: tuple[Request, int, int, str, Any]) -> tuple[list[float], int, float]:
    request, concurrency, per_process, tag, barrier = args
    barrier.wait()
    return asyncio.run(_worker(request, concurrency, per_process, tag))


def hammer(request: Request, *, concurrency: int, total: int, processes: int = 2) -> Result:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(processes)
        share = concurrency // processes
        per = total // processes
        tag = f"run{time.time_ns()}"
        with ctx.Pool(processes) as pool:
            parts = pool.map(
                _process, [(request, share, per, f"{tag}-{p}", barrier) for p in range(processes)]
            )
    latencies = sorted(x for part in parts for x in part[0])
    seconds = max(part[2] for part in parts)
    return Result(
        requests=len(latencies),
        errors=sum(part[1] for part in parts),
        seconds=seconds,
        p50_ms=statistics.median(latencies) * 1000,
        p99_ms=latencies[int(len(latencies) * 0.99) - 1] * 1000,
    )
