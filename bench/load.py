"""The load generator: wrk (C, 2 threads) when it is installed (`make bench` installs
Debian's package), else aiohttp (the fastest Python client measured here, see
../shared/HTTPX.md) in several processes, each with its share of the concurrency. Returns
throughput and latency percentiles over all requests.

The generator shares the machine's two cores with the service it measures, so its own CPU
is taken from the figure: the aiohttp generator spent about 0.35 ms of CPU per request,
about a core at 3,000 requests/s. wrk runs for a time rather than a count (`total` over an
expected 2,500 requests/s, at least 2 s); a unique header (Idempotency-Key) is made per
request by its Lua script, from the thread's number and a counter. A caller that needs an
exact number of requests (the lifecycle figure: that many jobs) asks for aiohttp."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

log = logging.getLogger("bench")


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


def generator() -> str:
    """The load generator `hammer` uses: "wrk", or "aiohttp" (`LEDGER_BENCH_LOAD=aiohttp`
    chooses it even where wrk is installed)."""
    if os.environ.get("LEDGER_BENCH_LOAD") != "aiohttp" and shutil.which("wrk"):
        return "wrk"
    return "aiohttp"


def hammer(
    request: Request, *, concurrency: int, total: int, processes: int = 2, exact: bool = False
) -> Result:
    """`exact`: exactly `total` requests (the aiohttp generator, whatever is installed)."""
    if generator() == "wrk" and not exact:
        for _ in range(WRK_TRIES):
            try:
                return _wrk(request, concurrency=concurrency, seconds=max(2.0, total / WRK_RATE))
            except ImpossibleLatencies as error:
                log.warning("bench: %s; measured again", error)
        log.warning("bench: wrk's latencies were impossible %d times; aiohttp instead", WRK_TRIES)
        FALLBACKS.append(f"{request.method} {request.url}")
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


WRK_RATE = 2500.0  # requests/s assumed to turn a request count into wrk's duration
WRK_TRIES = 3
IMPOSSIBLE_BUSY = 2.0  # latencies adding up to this many times connections x seconds
FALLBACKS: list[str] = []  # the runs measured with aiohttp after wrk failed them (the report)
WRK_SCRIPT = """
local body_file, unique, tag = %(body_file)s, %(unique)s, %(tag)s
wrk.method = %(method)s
%(headers)s
if body_file ~= "" then
  local f = assert(io.open(body_file, "rb"))
  wrk.body = f:read("*a")
  f:close()
end
local next_id = 0
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end
local counter = 0
if unique ~= "" then
  function request()
    counter = counter + 1
    local headers = {}
    for k, v in pairs(wrk.headers) do headers[k] = v end
    headers[unique] = tag .. "-" .. id .. "-" .. counter
    return wrk.format(nil, nil, headers)
  end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("JOBLEDGER %%d %%f %%f %%f %%d %%f", summary.requests,
    summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.connect + e.read + e.write + e.status + e.timeout, latency.mean / 1000), "\\n")
end
"""


def _lua(text: str) -> str:
    return "[==[" + text + "]==]"


def _wrk(request: Request, *, concurrency: int, seconds: float, guard: bool = True) -> Result:
    headers = "\n".join(f"wrk.headers[ {_lua(k)} ] = {_lua(v)}" for k, v in request.headers.items())
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        body_file = ""
        if request.body is not None:
            body_file = os.path.join(tmp, "body")
            with open(body_file, "wb") as f:
                f.write(request.body)
        script = os.path.join(tmp, "load.lua")
        with open(script, "w") as f:
            f.write(
                WRK_SCRIPT
                % {
                    "body_file": _lua(body_file),
                    "unique": _lua(request.unique_header or ""),
                    "tag": _lua(f"run{time.time_ns()}"),
                    "method": _lua(request.method),
                    "headers": headers,
                }
            )
        args = [
            "wrk",
            "-t2",
            f"-c{concurrency}",
            f"-d{seconds:.0f}s",
            "--timeout",
            "30s",
            "-s",
            script,
            request.url,
        ]
        ran = subprocess.run(args, capture_output=True, text=True, check=True)  # noqa: S603
    return parse_wrk(ran.stdout, concurrency, stderr=ran.stderr, guard=guard)


def parse_wrk(out: str, concurrency: int, *, stderr: str = "", guard: bool = True) -> Result:
    """The figures the script's `done` printed; `ImpossibleLatencies` (`guard`) when they
    cannot be."""
    found = re.search(r"^JOBLEDGER (\d+) ([\d.]+) ([\d.]+) ([\d.]+) (\d+) ([\d.]+)$", out, re.M)
    if found is None:
        raise RuntimeError(f"bench: wrk said nothing usable: {out[-2000:]} {stderr[-2000:]}")
    requests, duration, p50, p99, errors, mean = found.groups()
    result = Result(
        requests=int(requests),
        errors=int(errors),
        seconds=float(duration),
        p50_ms=float(p50),
        p99_ms=float(p99),
    )
    # Each connection has one request out at a time, so the latencies cannot add up to much
    # more than connections x seconds (wrk's own accounting reads 1.0-1.3x in healthy runs).
    # In some runs wrk's added up to several times that (5-34x: a p99 of 0.5-2.3 s beside a
    # p95 of 11 ms, in runs of `--processes 2`; the aiohttp generator saw nothing of the kind
    # on the same server): such a run's latencies are not kept.
    busy = float(mean) / 1000 * result.requests / (concurrency * result.seconds)
    if guard and busy > IMPOSSIBLE_BUSY:
        raise ImpossibleLatencies(f"wrk's latencies add up to {busy:.1f}x the time available")
    return result


class ImpossibleLatencies(RuntimeError):
    """wrk reported latencies that add up to more than its connections had time for."""
