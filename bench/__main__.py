"""`python -m bench [--quick] [--out docs/performance.md]`: measure, print, write the table.

Every figure is measured next to its baseline in the same run on the same machine and
database, and reported as a ratio; absolute numbers vary between machines, ratios much less.
PostgreSQL comes from LEDGER_BENCH_DATABASE_URL (default: a fresh schema in
postgresql://postgres@127.0.0.1:5432/ledger_test, dropped afterwards).

Figures (issue 8): the create and status-read API against raw inserts and a plain Starlette
read, HTTP ceilings, ledger writes, projection rebuild against a raw read of the log (and the
floor between them: the raw read plus writing the view's rows and indexes by hand), signing
against bare HMAC, scale, lifecycle, a peer (procrastinate), and (bench/delivery_figures.py)
webhook delivery and commit-to-webhook latency with an HTTP client comparison.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gc
import hashlib
import hmac
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psycopg

from bench import cpu, load, plots
from bench.ceiling import ceiling_figures
from bench.delivery_figures import delivery_section
from bench.lifecycle_figures import lifecycle_figures
from bench.load import Request, Result, generator, hammer
from bench.peer_figures import peer_figures
from bench.scale_figures import scale_figures, wait_caught_up
from bench.support import (
    BASE_URL,
    BENCH_ADMIN,
    BENCH_KEY,
    FLOORS,
    LEDGER,
    Figure,
    Floor,
    LatencyFloor,
    Processes,
    bench_job,
    bench_service,
    checkpoint,
    free_port,
    hammer_creates,
    machine_ticks,
    new_tenant,
    pg_schema,
    postgres_settings,
    projector,
    read_me_job,
    reference_seconds,
    stop_child,
    wait_http,
)
from delivery.signing import new_secret, sign
from jobledger.bootstrap import Service
from projections.registry import live, shadow
from projections.runner import ProjectionRunner, build_indexes, rebuild
from storage.sql import SqlStore


def in_threads(threads: int, total: int, work: Callable[[int, int], None]) -> float:
    """Run `work(thread, n)` for n in that thread's share; returns operations per second."""
    per = total // threads
    started = threading.Barrier(threads + 1)

    def run(t: int) -> None:
        started.wait()
        work(t, per)

    pool = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    started.wait()
    t0 = time.perf_counter()
    for thread in pool:
        thread.join()
    return per * threads / (time.perf_counter() - t0)


RAW_RUNS = 3
CLIENTS = 32  # of the status reads (ours and the plain one), which their p99 row reasons from


def raw_rate(url: str, threads: int, total: int, use: cpu.Use | None = None) -> float:
    """The create baseline: the median of `RAW_RUNS` runs of `raw_inserts`, after a
    checkpoint. One run's rate moved between 5,500 and 7,800 rows/s from one bench to the
    next on the same day (the server's WAL flushes), and every create ratio moved with it."""
    checkpoint()
    rates = []
    for _ in range(RAW_RUNS):
        with cpu.measure(use, {"bench (psycopg clients)": os.getpid()}) as measured:
            rates.append(raw_inserts(url, threads, total))
        measured.operations += total
        use = measured  # the runs add up in one
    return statistics.median(rates)


def raw_inserts(url: str, threads: int, total: int) -> float:
    """Baseline: one small row per transaction, synchronous commit, one connection per thread."""
    schema = url.split("schema=")[1]
    with psycopg.connect(BASE_URL, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {schema}.raw (id uuid PRIMARY KEY, body jsonb NOT NULL)"
        )

    def work(t: int, n: int) -> None:
        with psycopg.connect(BASE_URL) as conn:
            for _ in range(n):
                with conn.transaction():
                    conn.execute(
                        f"INSERT INTO {schema}.raw VALUES (%s, %s)",
                        (uuid.uuid4(), orjson.dumps({"t": t}).decode()),
                    )

    return in_threads(threads, total, work)


def ledger_creates(service: Service, threads: int, total: int) -> float:
    def work(t: int, n: int) -> None:
        for i in range(n):
            service.ledger.create_job(
                bench_job(i), tenant_id="bench", idempotency_key=f"{t}-{i}", actor="bench"
            )

    return in_threads(threads, total, work)


def raw_log_read(service: Service) -> float:
    recorder = service.ledger.recorder
    t0 = time.perf_counter()
    start, count = 0, 0
    while True:
        batch = recorder.select_notifications(start, 500, inclusive_of_start=False)
        if not batch:
            break
        for note in batch:
            service.ledger.mapper.to_domain_event(note)
        count += len(batch)
        start = batch[-1].id
    return count / (time.perf_counter() - t0)


REBUILD_RUNS = 3


def rebuild_and_read_rates(
    service: Service, rebuilt: cpu.Use, read: cpu.Use, floor: cpu.Use
) -> tuple[float, float, float]:
    """Figure 5, both sides and the floor between them: the medians of `REBUILD_RUNS`
    rebuilds, as many raw reads and as many floors (`rebuild_floor_rate`), taken in turns,
    each after a full collection. One run of each, the raw read second, read 48,700 events/s
    in one bench and 77,200 in the one before with the same code: the rebuild's garbage was
    collected during the read."""
    this = {"bench (this process)": os.getpid()}
    events = service.ledger.recorder.max_notification_id() or 0
    rebuilds: list[float] = []
    reads: list[float] = []
    floors: list[float] = []
    rows: list[tuple[object, ...]] = []  # the view's rows, once there is a rebuilt view
    sides: tuple[tuple[list[float], cpu.Use, Callable[[Service], float]], ...] = (
        (rebuilds, rebuilt, rebuild_rate),
        (reads, read, raw_log_read),
        (floors, floor, lambda s: rebuild_floor_rate(s, rows)),
    )
    for _ in range(REBUILD_RUNS):
        for rates, use, run in sides:
            if run is not rebuild_rate and not rows:
                rows.extend(_view_rows(service, "job_status"))
            gc.collect()
            with cpu.measure(use, this):
                rates.append(run(service))
            use.operations += events
    return statistics.median(rebuilds), statistics.median(reads), statistics.median(floors)


def rebuild_rate(service: Service) -> float:
    store = SqlStore(service.database)
    try:
        runner = ProjectionRunner(service.ledger, store, live(service.ledger, "job_status"))
        runner.setup()
        events = service.ledger.recorder.max_notification_id() or 0
        t0 = time.perf_counter()
        rebuild(
            service.ledger,
            store,
            live(service.ledger, "job_status"),
            shadow(service.ledger, "job_status"),
        )
        return events / (time.perf_counter() - t0)
    finally:
        store.close()


FLOOR_TABLE = "rebuild_floor"


def _view_rows(service: Service, table: str) -> list[tuple[object, ...]]:
    with service.database.connect() as conn:
        return list(conn.execute(f"SELECT * FROM {table}").fetchall())


def rebuild_floor_rate(service: Service, rows: list[tuple[object, ...]]) -> float:
    """Figure 5's floor: what any rebuild of `job_status` does at the least, by hand: the
    baseline's raw read and decode of the log, then the view's final `rows` COPYed into an
    empty copy of its table and its indexes built as our rebuild builds them
    (`INDEX_BUILDS` at a time). Nothing folds events into jobs or formats a row: the gap
    between this and our rebuild is our projection's own work; the gap between this and
    the raw read is the writing any rebuild must do. Events/s over the whole log."""
    events = service.ledger.recorder.max_notification_id() or 0
    store = SqlStore(service.database)  # (its connections commit each statement)
    try:
        with store.connection() as conn:
            conn.execute(f"DROP TABLE IF EXISTS {FLOOR_TABLE}")
            definitions = [
                re.sub(
                    r"INDEX job_status(\w*) ON \S+ ",
                    rf"INDEX {FLOOR_TABLE}\1 ON {FLOOR_TABLE} ",
                    str(d),
                )
                for (d,) in conn.execute(
                    "SELECT pg_get_indexdef(indexrelid) FROM pg_index "
                    "WHERE indrelid = to_regclass('job_status')"
                ).fetchall()
            ]
        t0 = time.perf_counter()
        raw_log_read(service)
        with store.connection() as conn:
            conn.execute(f"CREATE TABLE {FLOOR_TABLE} (LIKE job_status)")
            with conn.cursor() as cur, cur.copy(f"COPY {FLOOR_TABLE} FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        build_indexes(store, definitions)
        seconds = time.perf_counter() - t0
        with store.connection() as conn:
            conn.execute(f"DROP TABLE {FLOOR_TABLE}")
        return events / seconds
    finally:
        store.close()


def signing_rates(rounds: int) -> tuple[float, float]:
    secret = new_secret()
    key = base64.b64decode(secret.removeprefix("whsec_"))
    body = orjson.dumps({"data": "x" * 1000})

    def ours() -> None:
        sign(secret, "msg_0123456789abcdef0123456789abcdef", 1_700_000_000, body)

    def bare() -> None:
        base64.b64encode(hmac.new(key, b"msg.1700000000." + body, hashlib.sha256).digest())

    def rate(fn: Callable[[], None]) -> float:
        samples = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(rounds):
                fn()
            samples.append(rounds / (time.perf_counter() - t0))
        return statistics.median(samples)

    return rate(ours), rate(bare)


@contextmanager
def child(
    args: list[str], env: dict[str, str], ready_url: str
) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(  # noqa: S603 - our own commands
        args, env={**os.environ, **env}, stdout=subprocess.DEVNULL
    )
    try:
        wait_http(ready_url, process, args[0])  # (120 s: start-up crawls on a loaded machine)
        yield process
    finally:
        stop_child(process)


def _api_run(
    url: str,
    total: int,
    *serve_args: str,
    with_projector: bool = False,
    use: cpu.Use | None = None,
) -> tuple[Result, Result, str]:
    """`ledger serve --role api *serve_args` hammered with creates, then, once the views have
    applied them (`wait_applied`), with reads of one job:
    (creates, reads, that job's id). `with_projector`: the views run in a projector process
    started first (the API process only serves). `use`: the machine's CPU during the creates
    (`bench.cpu`)."""
    port = free_port()
    env = {
        "LEDGER_DATABASE_URL": url,
        "LEDGER_ADMIN_KEY": BENCH_ADMIN,
        "LEDGER_SECRET_KEY": BENCH_KEY,
        "LEDGER_AUDIT_CHECKPOINT_SECONDS": "0",
        # one key makes every request: the limiter runs (its cost is measured) but never refuses
        "LEDGER_RATE_LIMIT_PER_SECOND": "1000000000",
        "LEDGER_RATE_LIMIT_BURST": "1000000000",
    }
    base = f"http://127.0.0.1:{port}"
    command = [LEDGER, "serve", "--role", "api", "--port", str(port), *serve_args]
    with contextlib.ExitStack() as stack:
        processes = {}
        if with_projector:
            processes["projector"] = stack.enter_context(projector(url, env)).pid
        processes["api"] = stack.enter_context(child(command, env, f"{base}/healthz")).pid
        auth = new_tenant(base)
        with cpu.measure(use, processes) as measured:
            creates = hammer_creates(base, auth, total)
        measured.operations += creates.requests
        waited = wait_applied(url)
        print(f"bench: the views applied the creates {waited:.1f} s after them", file=sys.stderr)
        job_id = read_me_job(base, auth)
        reads = hammer(
            Request("GET", f"{base}/v1/jobs/{job_id}", auth),
            concurrency=CLIENTS,
            total=total * 2,
        )
    return creates, reads, job_id


# Runs of each create/read configuration, each in turn with its own baseline run: the machine's
# speed moved by up to 1.5x within an hour (the same configuration used 0.44 to 0.66 ms of CPU
# per create), so a baseline measured minutes before the figure could flatter or sink it.
API_RUNS = 3


@dataclass(frozen=True)
class Turn:
    """One run of a configuration and the baseline run measured beside it."""

    baseline: float
    result: Result
    baseline_result: Result | None = None  # the baseline's own run, when it is a load run

    @property
    def ratio(self) -> float:
        return self.result.rate / self.baseline if self.baseline else 0.0


def median_turn(turns: list[Turn]) -> Turn:
    """The turn whose ratio is the median: a whole run (its rate, p99 and baseline belong
    together), not a median of each number apart."""
    return sorted(turns, key=lambda turn: turn.ratio)[len(turns) // 2]


def turns_note(turns: list[Turn]) -> str:
    """How the ratios of all the turns spread, for the figure's name."""
    if len(turns) < 2:
        return ""
    ratios = ", ".join(f"{turn.ratio:.2f}x" for turn in turns)
    return f"; the median of {len(turns)} runs, each beside its own baseline run: {ratios}"


def plain_read(url: str, job_id: str, total: int) -> Result:
    """Figure 4's baseline: a plain Starlette + psycopg-pool app reading the job's row."""
    schema = url.split("schema=")[1]
    port = free_port()
    base = f"http://127.0.0.1:{port}/rows/{job_id}"
    args = [sys.executable, "-m", "bench.baseline_app", BASE_URL, str(port), f"{schema}.job_status"]
    with child(args, {}, base):
        return hammer(Request("GET", base, {}), concurrency=CLIENTS, total=total)


def wait_applied(url: str, timeout: float = 120.0) -> float:
    """Until every projection has applied the log as it stands; returns the wait. The reads
    of a configuration are measured once its creates' aftermath is over (as the scale
    figures' are): a lone API process runs the views itself, and they trail a burst of
    creates."""
    service = bench_service(url)
    store = SqlStore(service.database)
    try:
        return wait_caught_up(service, store, Processes({}), timeout)
    finally:
        store.close()
        service.close()


def api_figures(url: str, raw_use: cpu.Use, quick: bool) -> list[Figure]:
    """Create-job API and status reads at 32 clients against `ledger serve --role api`: in one
    serving process, in two (`--processes 2`), and in one beside a projector process that
    runs the views (which a lone API process runs itself). `API_RUNS` rounds: in each, every
    configuration's creates run right after a run of their baseline (raw inserts), and the
    lone process's reads right before a run of theirs (the plain read); each figure is its
    median turn."""
    total = 2000 if quick else 10000
    lone, beside = cpu.Use(), cpu.Use()
    # name -> (its label in the figures, `ledger serve` arguments, with a projector, CPU use)
    configurations: dict[str, tuple[str, tuple[str, ...], bool, cpu.Use | None]] = {
        "lone": ("", (), False, lone),
        "processes": (", --processes 2", ("--processes", "2"), False, None),
        "projector": (", views in a `--role projector` process", (), True, beside),
    }
    creates: dict[str, list[Turn]] = {name: [] for name in configurations}
    reads: dict[str, list[Turn]] = {name: [] for name in configurations}
    for _ in range(1 if quick else API_RUNS):
        plain: Result | None = None
        for name, (_, serve_args, with_projector, use) in configurations.items():
            raw = raw_rate(url, 4, 1000 if quick else 5000, raw_use)
            made, read, job_id = _api_run(
                url, total, *serve_args, with_projector=with_projector, use=use
            )
            if plain is None:  # the read baseline of this round, beside the first reads
                plain = plain_read(url, job_id, total * 2)
            creates[name].append(Turn(raw, made))
            reads[name].append(Turn(plain.rate, read, plain))
    raw_name = "raw psycopg, 1 row/tx, 4 connections"
    cpu.BUDGETS.append(cpu.Budget("POST /v1/jobs, lone API process", lone, raw_name, raw_use, 0.5))
    cpu.BUDGETS.append(
        cpu.Budget("POST /v1/jobs, views in a projector process", beside, raw_name, raw_use, 0.5)
    )
    figures = []
    for name, (label, *_) in configurations.items():
        create = median_turn(creates[name])
        figures.append(
            Figure(
                f"POST /v1/jobs, {CLIENTS} clients{label} (p99 {create.result.p99_ms:.0f} ms, "
                f"{create.result.errors} errors{turns_note(creates[name])})",
                "jobs/s",
                create.result.rate,
                raw_name,
                create.baseline,
                0.5,
            )
        )
        status = median_turn(reads[name])
        plain = status.baseline_result
        assert plain is not None
        figures.append(
            Figure(
                f"GET /v1/jobs/{{id}}, {CLIENTS} clients{label} (p99 "
                f"{status.result.p99_ms:.1f} ms, {status.result.errors} errors"
                f"{turns_note(reads[name])})",
                "req/s",
                status.result.rate,
                f"Starlette + psycopg pool, one row (p99 {plain.p99_ms:.1f} ms)",
                status.baseline,
                0.7,
            )
        )
        if name == "lone":
            figures.append(read_p99_figure(status.result, plain))
            FLOORS.append(
                LatencyFloor(
                    f"figure 4, GET /v1/jobs/{{id}} p99 at {CLIENTS} clients",
                    "the plain Starlette + psycopg pool read of one row, its baseline",
                    status.result.p99_ms,
                    plain.p99_ms,
                    READ_P99_TARGET_MS,
                )
            )
    return figures


READ_P99_TARGET_MS = 10.0


def read_p99_figure(reads: Result, plain: Result) -> Figure:
    """Figure 4's latency target, with what bounds it: a closed loop of `CLIENTS` clients has
    `CLIENTS / rate` requests' worth of waiting on average (Little's law), so a p99 within the
    target needs a mean well under it, that is a rate well above `CLIENTS / target`."""
    met = "met" if reads.p99_ms <= READ_P99_TARGET_MS else "NOT met"
    return Figure(
        f"GET /v1/jobs/{{id}}, {CLIENTS} clients, p99 (target <= {READ_P99_TARGET_MS:.0f} ms: "
        f"{met}; the mean of a closed loop of {CLIENTS} clients is {CLIENTS} / rate: "
        f"{_closed_loop_mean_ms(reads):.1f} ms here, {_closed_loop_mean_ms(plain):.1f} ms for "
        f"the plain read; a p99 within {READ_P99_TARGET_MS:.0f} ms needs well over "
        f"{CLIENTS * 1000 / READ_P99_TARGET_MS:,.0f} reads/s)",
        "ms",
        reads.p99_ms,
        "Starlette + psycopg pool, one row, p99",
        plain.p99_ms,
        None,
    )


def _closed_loop_mean_ms(result: Result) -> float:
    return 1000 * CLIENTS / result.rate if result.rate else float("inf")


def measure(quick: bool) -> list[Figure]:
    jobs = 1000 if quick else 5000
    figures = []
    with pg_schema() as (url, _):
        raw_use = cpu.Use()
        raw = raw_rate(url, 4, jobs, raw_use)
        figures += api_figures(url, raw_use, quick)
        figures += ceiling_figures(raw, quick)
        service = bench_service(url)
        try:
            created = ledger_creates(service, 4, jobs)
            figures.append(
                Figure(
                    "ledger create_job, 4 threads (PostgreSQL)",
                    "jobs/s",
                    created,
                    "raw psycopg, 1 row/tx, 4 connections",
                    raw,
                    0.5,
                )
            )
            rebuilt, read, floor = cpu.Use(), cpu.Use(), cpu.Use()
            rebuild_events, read_events, floor_events = rebuild_and_read_rates(
                service, rebuilt, read, floor
            )
            read_name = "raw read + decode of the log, 500/batch"
            figures.append(
                Figure(
                    f"job_status rebuild (PostgreSQL, median of {REBUILD_RUNS} runs, in turns "
                    "with the raw read)",
                    "events/s",
                    rebuild_events,
                    read_name,
                    read_events,
                    0.5,
                )
            )
            floor_name = (
                f"job_status rebuild floor: the raw read, then COPY of the view's final rows and "
                f"its index builds, by hand (median of {REBUILD_RUNS}, in the same turns)"
            )
            figures.append(
                Figure(floor_name, "events/s", floor_events, read_name, read_events, None)
            )
            FLOORS.append(
                Floor(
                    "figure 5, job_status rebuild",
                    "the raw read, then COPY of the view's final rows into an empty table and "
                    "its index builds",
                    rebuild_events,
                    floor_events,
                    read_events,
                    0.5,
                )
            )
            cpu.BUDGETS.append(cpu.Budget("job_status rebuild", rebuilt, read_name, read, 0.5))
            cpu.BUDGETS.append(
                cpu.Budget("job_status rebuild floor (by hand)", floor, read_name, read, 0.5)
            )
        finally:
            service.close()
    ours, bare = signing_rates(5_000 if quick else 50_000)
    figures.append(
        Figure(
            "Standard Webhooks sign, 1 KB", "ops/s", ours, "bare HMAC-SHA256 + base64", bare, None
        )
    )
    figures += scale_figures(quick)
    figures += lifecycle_figures(quick)
    figures += peer_figures(quick)
    return figures


def table(figures: list[Figure]) -> str:
    lines = [
        "| figure | value | baseline | baseline value | ratio | target |",
        "|---|---|---|---|---|---|",
    ]
    for f in figures:
        target = f">= {f.target}x" if f.target is not None else "-"
        met = "" if f.target is None else (" (met)" if f.ratio >= f.target else " (NOT met)")
        lines.append(
            f"| {f.name} | {amount(f.value)} {f.unit} | {f.baseline_name} | "
            f"{amount(f.baseline)} {f.unit} | {f.ratio:.2f}x | {target}{met} |"
            if f.baseline
            else f"| {f.name} | {amount(f.value)} {f.unit} | {f.baseline_name} | - | - | - |"
        )
    return "\n".join(lines)


def amount(value: float) -> str:
    """Whole numbers from 10 up; below, two significant digits (a 0.4 ms floor is not 0)."""
    return f"{value:,.0f}" if abs(value) >= 10 or value == 0 else f"{value:.2g}"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="smaller runs (about a minute)")
    parser.add_argument("--out", default="docs/performance.md")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    reference = reference_seconds()
    ticks_before = machine_ticks()
    figures = measure(args.quick)
    delivery, clients = delivery_section(args.quick)
    figures += delivery
    text = table(figures)
    (ticks, stolen), (ticks_0, stolen_0) = machine_ticks(), ticks_before
    ticks, stolen = ticks - ticks_0, stolen - stolen_0
    budgets = (
        "Where the CPU goes (`bench/cpu.py`): the whole machine's busy CPU per operation while "
        "each side of a figure ran, split by process; other is what no named process covers "
        "(the load generator, the kernel's loopback networking, processes that ended). When "
        "both sides keep the machine busy, the ratio of their rates is the inverse ratio of "
        "these costs. And one Python process does at most one core's work: our busiest "
        "process's CPU per operation caps our rate too. The last column gives both ratios and "
        "the cost per operation the target needs from each.\n\n" + cpu.table(cpu.BUDGETS)
    )
    if FLOORS:
        budgets += (
            "\n\nFloors: a hand-written minimum of a figure's work, measured beside ours and "
            "the baseline in the same run (the rows above): whether a target that is not met is "
            "out of this machine's reach or of our code's.\n\n"
            + "\n".join(floor.explained() for floor in FLOORS)
        )
    print(text + "\n\n" + budgets + "\n\n" + clients)
    header = (
        "# Performance\n\n"
        "Written by `make bench` (`python -m bench`); every figure is measured beside its "
        "baseline in the same run.\n\n"
        f"Last run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {postgres_settings()}"
        f"{' (quick mode)' if args.quick else ''}. Load average (1 min) before the run "
        f"{load_before:.2f}, after it {os.getloadavg()[0]:.2f}: the suite itself loads the "
        "machine; a figure is only comparable with runs started on a quiet machine. "
        f"CPU time stolen by the hypervisor during the run: {stolen / ticks if ticks else 0:.1%}"
        f"; a fixed Python loop (5M additions) took {reference:.2f} s before it (a speed "
        "reference for comparing days). HTTP load: "
        + (
            "wrk, 2 threads (C; it shares the two cores with the service measured)"
            + (
                f"; {len(load.FALLBACKS)} runs whose wrk latencies added up to more time "
                "than its connections had were measured again with the aiohttp generator"
                if load.FALLBACKS
                else ""
            )
            if generator() == "wrk"
            else "aiohttp in 2 processes (wrk is not installed; about 0.35 ms of CPU per "
            "request taken from the service measured on the same cores)"
        )
        + ".\n\n"
    )
    pictures = plots.write(figures, Path(args.out).parent / "perf")
    Path(args.out).write_text(
        header + text + "\n\n" + budgets + "\n\n" + clients + "\n\n" + pictures + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
