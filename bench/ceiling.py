"""The HTTP ceiling beside figure 1: the same load generator, 32 clients, against an empty
Starlette + uvicorn app in one process (bench.ceiling_app): POST with the create body and GET.
Whatever figure 1 reaches, a Python HTTP API on this stack and machine cannot pass this."""

from __future__ import annotations

import sys

import orjson

from bench import plots
from bench.load import Request, hammer
from bench.support import Figure, Processes, free_port, wait_http

BODY = orjson.dumps({"account_id": "acct", "board_id": "board", "pin": {"title": "t"}})


def ceiling_figures(raw_rate: float, quick: bool) -> list[Figure]:
    total = 2000 if quick else 20000
    port = free_port()
    base = f"http://127.0.0.1:{port}/v1/jobs"
    with Processes({}) as procs:
        proc = procs.start("ceiling", [sys.executable, "-m", "bench.ceiling_app", str(port)])
        wait_http(f"{base}/x", proc, "the ceiling app")
        posts = hammer(
            Request(
                "POST",
                base,
                {"Content-Type": "application/json"},
                BODY,
                unique_header="Idempotency-Key",
            ),
            concurrency=32,
            total=total,
        )
        gets = hammer(Request("GET", f"{base}/x", {}), concurrency=32, total=total)
    plots.record_latency("ceiling: empty POST", posts)
    plots.record_latency("ceiling: empty GET", gets)
    return [
        Figure(
            f"HTTP ceiling: empty Starlette POST, 32 clients (p99 {posts.p99_ms:.0f} ms)",
            "req/s",
            posts.rate,
            "raw psycopg, 1 row/tx, 4 connections",
            raw_rate,
            None,
        ),
        Figure(
            f"HTTP ceiling: empty Starlette GET, 32 clients (p99 {gets.p99_ms:.0f} ms)",
            "req/s",
            gets.rate,
            "- (an upper bound for figure 4)",
            0.0,
            None,
        ),
    ]
