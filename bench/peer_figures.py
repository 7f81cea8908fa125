"""Figure 8, a peer side by side on the same PostgreSQL, in the same run: procrastinate
(a PostgreSQL job queue) defers a no-op job and its worker runs it, against our ledger creating
a sandbox job and our worker publishing it. Each side: its worker process already running, 4
threads submitting one job per call through the library (procrastinate `defer`, our
`JobLedger.create_job`), the clock stopped when every job is done (procrastinate: `succeeded`;
ours: `published` in the job-status view). Each in its own schema.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

import psycopg

from bench.lifecycle_figures import fast_env
from bench.support import BASE_URL, Figure, Processes, bench_service, pg_schema
from ledger.request import MediaSource, NewJob, Pin
from storage.sql import SqlStore
from worker.runner import prepare_tables

THREADS = 4
WORKER_CONCURRENCY = "8"


def _submit(total: int, one: Callable[[int, int], object]) -> None:
    """`one(thread, i)` for each thread's share of `total`, in `THREADS` threads."""
    per = total // THREADS

    def run(t: int) -> None:
        for i in range(per):
            one(t, i)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _wait(done: Callable[[], int], total: int, procs: Processes, what: str) -> None:
    deadline = time.monotonic() + 300 + total  # generous: a loaded machine crawls
    while done() < total:
        procs.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: only {done()} of {total} jobs done")
        time.sleep(0.05)


def procrastinate_rate(total: int) -> float:
    with pg_schema("peer") as (_, schema):
        env = {"BENCH_PEER_SCHEMA": schema, "LEDGER_BENCH_DATABASE_URL": BASE_URL}
        os.environ.update(env)  # bench.peer_app reads it at import
        from bench.peer_app import app, noop

        with app.open():
            app.schema_manager.apply_schema()
            with Processes(env) as procs:
                procs.start(
                    "procrastinate",
                    [
                        sys.executable,
                        "-m",
                        "procrastinate",
                        "--app=bench.peer_app.app",
                        "worker",
                        "--concurrency",
                        WORKER_CONCURRENCY,
                    ],
                )
                time.sleep(3.0)  # the worker is up and listening
                with psycopg.connect(BASE_URL, autocommit=True) as conn:

                    def done() -> int:
                        row = conn.execute(
                            f"SELECT count(*) FROM {schema}.procrastinate_jobs "
                            "WHERE status = 'succeeded'"
                        ).fetchone()
                        return int(row[0]) if row else 0

                    t0 = time.perf_counter()
                    _submit(total, lambda t, i: noop.defer(i=t * total + i))
                    _wait(done, total - total % THREADS, procs, "procrastinate")
                    return (total - total % THREADS) / (time.perf_counter() - t0)


def ledger_rate(total: int) -> float:
    with pg_schema("peerours") as (url, _):
        service = bench_service(url)
        store = SqlStore(service.database)
        try:
            from projections.job_status import JobStatusProjection
            from projections.runner import ProjectionRunner

            prepare_tables(
                store, ProjectionRunner(service.ledger, store, JobStatusProjection(service.ledger))
            )
            new = NewJob(
                account_id="acct",
                board_id="board",
                pin=Pin(
                    title="t",
                    description=None,
                    link=None,
                    alt_text=None,
                    media_source=MediaSource("image_url", "https://e.com/i.jpg"),
                ),
                mode="sandbox",
            )
            with Processes(fast_env(url)) as procs:
                procs.role("worker")
                time.sleep(3.0)  # the worker is up and following the log

                def done() -> int:
                    with store.transaction() as tx:
                        row = tx.execute(
                            "SELECT count(*) FROM job_status WHERE state = 'published'"
                        ).fetchone()
                    return int(row[0]) if row else 0

                t0 = time.perf_counter()
                _submit(
                    total,
                    lambda t, i: (
                        service.ledger.create_job(
                            new, tenant_id="peer", idempotency_key=f"{t}-{i}", actor="key:bench"
                        )
                        and None
                    ),
                )
                _wait(done, total - total % THREADS, procs, "job ledger")
                return (total - total % THREADS) / (time.perf_counter() - t0)
        finally:
            store.close()
            service.close()


def peer_figures(quick: bool) -> list[Figure]:
    total = 200 if quick else 1000
    theirs = procrastinate_rate(total)
    ours = ledger_rate(total)
    return [
        Figure(
            "create + sandbox publish, worker process, 4 submitting threads (PostgreSQL)",
            "jobs/s",
            ours,
            "procrastinate defer + run no-op, same set-up and database",
            theirs,
            None,
        )
    ]
