"""Webhook delivery figures (issue 8, figures 2 and 3) and the HTTP client comparison.

- HTTP clients side by side (`bench.http_clients`): its own table.
- Figure 2, delivery throughput: N pending deliveries (one endpoint, `max_in_flight` 64) are
  sent by the real sender (`jobledger.delivery_role.DeliveryRole` over the process's read
  models, as `ledger serve --role delivery` runs it: lease, load, sign, POST, record a
  `DeliveryAttempted` event, release) to the local receiver; deliveries/s from the sender's
  start to the last attempt recorded. Baseline: the fastest client of the comparison at
  concurrency 64 plus Standard Webhooks signing (`delivery.signing`), the same number of
  requests with the same bodies to the same receiver.
- Figure 2's floor (`recorded_bare_rate`): the baseline's sender plus the least any sender
  that records its attempts adds, each receipt in a row COPYed and committed by a writer
  thread. Between it and the baseline: what durability costs on this machine; between it and
  ours: what our sender's leasing, loading, event sourcing and views cost.
- Figure 2 again across two delivery processes, and in one beside a projector process that
  runs the views (`processes_rate`): how far scaling out goes on this machine.
- Figure 3, state change to webhook: `ledger serve --role delivery` runs in its own process;
  this process creates jobs at 100/s for a bounded time and notes when each `create_job`
  returned (committed); the receiver notes when its `job.queued` webhook arrived. The path:
  commit -> NOTIFY -> LISTEN in the delivery process -> delivery_fanout -> delivery_queue ->
  the sender's wake-up -> HTTP. p50 and p99 against the issue's absolute targets; beside them
  the bare client's single request p50 (the floor of any delivery). Each row also names the
  stages' p50 or p99 (from the delivery queue's timestamps) and how busy the delivery process
  and the machine were meanwhile: on a machine half as fast, the same code at 100 jobs/s kept
  the delivery process at 71 % of a core and the p50 went from 11 to 36 ms, most of it in
  the fan-out stage (20 ms: commit to the delivery made).

All on PostgreSQL, each figure in a fresh schema, after a checkpoint (`bench.support.checkpoint`:
the server's background writing after the earlier figures is not measured here).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import aiohttp
import orjson
import psycopg

from bench import cpu
from bench.http_clients import (
    ClientResult,
    Receiver,
    client_table,
    measure_clients,
    running_receiver,
)
from bench.support import (
    BASE_URL,
    BENCH_KEY,
    FLOORS,
    LEDGER,
    Figure,
    Floor,
    bench_job,
    bench_service,
    checkpoint,
    cpu_seconds,
    pg_schema,
    projector,
    stop_child,
)
from delivery.sender import SentAttempt
from delivery.signing import message_id, new_secret, webhook_headers
from jobledger.bootstrap import Service
from jobledger.delivery_role import DeliveryRole, event_loop_factory
from jobledger.read_models import ReadModels
from ledger.clock import iso_z
from ledger.endpoint import EndpointSettings
from ledger.webhooks import NewDelivery
from storage.sql import parse_utc_text

log = logging.getLogger("bench")

LATENCY_RATE = 100.0  # jobs/s (the figure 3)
P50_TARGET_MS = 20.0
P99_TARGET_MS = 100.0
BARE_NAME = "bare aiohttp (64 in flight) + HMAC signing, same receiver"
DELIVERY_PROCESS = "delivery process"


def _endpoint(service: Service, url: str, max_in_flight: int = 64) -> tuple[str, UUID]:
    """A tenant and its endpoint (job.queued, 64 in flight unless told): (tenant id, endpoint
    id)."""
    ledger = service.ledger
    tenant_id = str(ledger.create_tenant("bench", actor="admin:bench").tenant.id)
    registered = ledger.register_endpoint(
        tenant_id,
        EndpointSettings(url=url, event_types=("job.queued",), max_in_flight=max_in_flight),
        actor="key:bench",
    )
    return tenant_id, registered.endpoint.id


def _make_deliveries(service: Service, tenant_id: str, endpoint_id: UUID, total: int) -> None:
    """`total` pending deliveries to the endpoint, as the fan-out makes them (a job.queued
    body of the usual size), 200 per save."""
    now = iso_z(service.ledger.clock.now())
    wanted = []
    for i in range(total):
        job_id = str(uuid.uuid4())
        data = {
            "job_id": job_id,
            "tenant_id": tenant_id,
            "idempotency_key": f"bench-{i}",
            "account_id": f"acct-{i % 7}",
            "board_id": f"board-{i % 13}",
            "state": "queued",
            "previous_state": None,
            "attempt": 0,
            "external_ref": None,
            "error": None,
            "occurred_at": now,
            "version": 1,
        }
        body = {"type": "job.queued", "timestamp": now, "data": data}
        wanted.append(
            NewDelivery(
                delivery_id=uuid.uuid4(),
                tenant_id=tenant_id,
                endpoint_id=endpoint_id,
                event_type="job.queued",
                payload=orjson.dumps(body).decode(),
                source_event_id=uuid.uuid4(),
                source_position=i + 1,
                job_id=job_id,
                hold_reason=None,
            )
        )
    for start in range(0, total, 200):
        service.ledger.create_deliveries(wanted[start : start + 200], actor="bench")


def _pending(read_models: ReadModels) -> int:
    with read_models.store.transaction() as tx:
        row = tx.execute("SELECT count(*) FROM delivery_queue WHERE state = 'pending'").fetchone()
    return int(row[0]) if row else 0


def _wait(predicate: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench: timed out waiting for {what}")
        time.sleep(0.05)


def sender_rate(
    url: str, receiver: Receiver, total: int, use: cpu.Use | None = None
) -> tuple[float, list[bytes]]:
    """Figure 2, ours: deliveries/s by the real sender; also the bodies it had to send.
    `use`: the machine's CPU while it sends (`bench.cpu`)."""
    service = bench_service(url, allow_private_targets=True)
    read_models = ReadModels(service)
    read_models.start()
    try:
        tenant_id, endpoint_id = _endpoint(service, receiver.url)
        t = time.perf_counter()
        _make_deliveries(service, tenant_id, endpoint_id, total)
        log.info("made %d deliveries in %.1f s", total, time.perf_counter() - t)
        _wait(lambda: _pending(read_models) >= total, f"{total} pending deliveries", 120)
        log.info("%d deliveries pending after %.1f s", total, time.perf_counter() - t)
        role = DeliveryRole(service, read_models, concurrency=64)
        done = threading.Event()
        finished: list[SentAttempt] = []

        def on_attempt(sent: SentAttempt) -> None:
            finished.append(sent)
            if len(finished) >= total:
                done.set()

        role.sender.attempt_finished.append(on_attempt)
        stop = threading.Event()
        thread = threading.Thread(target=role.run, args=(stop,), name="bench-delivery")
        this = "bench (sender + views)"
        with cpu.measure(use, {this: os.getpid(), "receiver": receiver.pid}) as measured:
            t0 = time.perf_counter()
            thread.start()
            if not done.wait(timeout=300):
                raise RuntimeError(f"bench: only {len(finished)} of {total} deliveries were sent")
            seconds = time.perf_counter() - t0
        measured.operations += total
        log.info(
            "sent %d in %.1f s; this process used %.1f ms CPU per delivery",
            total,
            seconds,
            measured.per_operation_ms(measured.parts[this]),
        )
        stop.set()
        thread.join(timeout=30)
        failed = [s for s in finished if not s.succeeded or not s.recorded]
        if failed:
            print(f"bench: {len(failed)} attempts failed: {failed[0].error}", file=sys.stderr)
        bodies = [s.request.body.encode() for s in finished]
        return total / seconds, bodies
    finally:
        read_models.close()
        service.close()


def _delivery_process(url: str, errors: Any) -> subprocess.Popen[bytes]:
    """`ledger serve --role delivery` on the bench schema (its log to `errors`)."""
    env = {
        **os.environ,
        "LEDGER_DATABASE_URL": url,
        "LEDGER_SECRET_KEY": BENCH_KEY,
        "LEDGER_ALLOW_PRIVATE_TARGETS": "true",
        "LEDGER_AUDIT_CHECKPOINT_SECONDS": "0",
    }
    return subprocess.Popen(  # noqa: S603 - our own command
        [LEDGER, "serve", "--role", "delivery"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=errors,
    )


def processes_rate(
    url: str, total: int, processes: int = 2, *, with_projector: bool = False
) -> tuple[float, float]:
    """Figure 2 across `processes` delivery processes (`ledger serve --role delivery`, as an
    operator scales out): (deliveries/s, CPU ms per delivery over those processes).

    The deliveries are made first; the processes then start, catch their views up and send.
    The endpoint's cap is 64 / `processes` in flight per process, so no more requests are in
    flight than in the single-process figure and the baseline. The rate is taken at the
    receiver, from the first webhook's arrival to the last one's (the processes' start-up is
    not counted), and every attempt must then be recorded in the ledger as a success.
    `with_projector`: a projector process started first runs the views (the delivery queue
    among them), so the delivery processes only claim, send and record; its CPU is not in the
    figure's CPU per delivery."""
    service = bench_service(url, allow_private_targets=True)
    with contextlib.ExitStack() as stack:
        stack.callback(service.close)
        receiver = stack.enter_context(running_receiver(record=True))
        tenant_id, endpoint_id = _endpoint(service, receiver.url, 64 // processes)
        if with_projector:
            stack.enter_context(projector(url, {"LEDGER_SECRET_KEY": BENCH_KEY}))
        _make_deliveries(service, tenant_id, endpoint_id, total)
        logs = [stack.enter_context(tempfile.TemporaryFile()) for _ in range(processes)]
        started = [_delivery_process(url, errors) for errors in logs]
        for process in started:
            stack.callback(stop_child, process)
        try:
            _wait(lambda: receiver.count() >= total, f"{total} webhooks", 300)
            schema = url.split("schema=")[1]
            with psycopg.connect(url.split("?")[0], autocommit=True) as conn:

                def succeeded() -> bool:
                    row = conn.execute(
                        f"SELECT count(*) FROM {schema}.delivery_queue WHERE state = 'succeeded'"
                    ).fetchone()
                    return row is not None and int(row[0]) >= total

                _wait(succeeded, f"{total} attempts recorded as successes", 120)
        except RuntimeError:
            for errors in logs:
                errors.seek(0)
                sys.stderr.write(errors.read()[-2000:].decode(errors="replace"))
            raise
        used = sum(cpu_seconds(process.pid) for process in started)
        arrivals = sorted(t for t, _ in receiver.received())
    rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    log.info(
        "%d processes: %d webhooks at %.0f/s, %.2f ms CPU each (start-up included)",
        processes,
        len(arrivals),
        rate,
        used * 1000 / total,
    )
    return rate, used * 1000 / total


async def _bare(
    receiver_url: str,
    bodies: list[bytes],
    concurrency: int,
    record: Callable[[bytes, int, float], None] | None = None,
) -> float:
    """Send `bodies`, `concurrency` at a time, signed; each answer's (body, status, seconds)
    goes to `record` when given."""
    secret = new_secret()
    connector = aiohttp.TCPConnector(limit=concurrency)
    queue = iter(bodies)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def loop() -> None:
            for body in queue:
                started = time.perf_counter()
                headers = webhook_headers(
                    [secret], message_id(uuid.uuid4()), int(time.time()), body
                )
                async with session.post(receiver_url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"bench: the receiver answered {response.status}")
                if record is not None:
                    record(body, response.status, time.perf_counter() - started)

        t0 = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return len(bodies) / (time.perf_counter() - t0)


def bare_rate(
    receiver: Receiver, bodies: list[bytes], concurrency: int = 64, use: cpu.Use | None = None
) -> float:
    """Figure 2, baseline: the fastest client (aiohttp) + Standard Webhooks signing."""
    processes = {"bench (aiohttp + HMAC)": os.getpid(), "receiver": receiver.pid}
    with (
        asyncio.Runner(loop_factory=event_loop_factory()) as runner,  # the sender's loop
        cpu.measure(use, processes) as measured,
    ):
        rate = runner.run(_bare(receiver.url, bodies, concurrency))
    measured.operations += len(bodies)
    return rate


FLOOR_NAME = (
    "floor: the bare sender recording each attempt by hand (a row with its receipt, "
    "COPY and commit by a writer thread, a batch per commit)"
)


def recorded_bare_rate(
    base_url: str,
    schema: str,
    receiver: Receiver,
    bodies: list[bytes],
    concurrency: int = 64,
    use: cpu.Use | None = None,
) -> float:
    """Figure 2's floor: the baseline's sender, and what any sender that records its attempts
    must add at the least: each attempt's receipt (as `delivery.http.receipt` keeps it) in a
    committed row of a logged table in `schema` (a temporary one would skip the WAL and its
    flush at commit), keyed like an event (id, attempt), written by a thread that COPYs
    whatever has finished since its last commit (group commit). Nothing is leased, loaded,
    retried or projected. Deliveries/s until the last row is committed."""
    table = f"{schema}.attempts_floor"
    pending: list[tuple[str, int, str]] = []
    arrived = threading.Condition()
    finished = threading.Event()

    def record(body: bytes, status: int, seconds: float) -> None:
        receipt = {
            "attempted_at": iso_z(datetime.now(UTC)),
            "url": receiver.url,
            "status_code": status,
            "latency_ms": round(seconds * 1000.0, 3),
            "response_headers": {},
            "response_body": "ok",
            "error_class": None,
            "error": None,
        }
        with arrived:
            pending.append((str(uuid.uuid4()), 1, orjson.dumps(receipt).decode()))
            arrived.notify()

    def write(conn: psycopg.Connection[Any]) -> None:
        while True:
            with arrived:
                while not pending and not finished.is_set():
                    arrived.wait(0.1)
                batch = pending[:]
                pending.clear()
            if not batch:
                return
            with conn.cursor() as cur, cur.copy(f"COPY {table} FROM STDIN") as copy:
                for row in batch:
                    copy.write_row(row)
            conn.commit()

    processes = {"bench (aiohttp + HMAC + writer)": os.getpid(), "receiver": receiver.pid}
    with psycopg.connect(base_url) as conn:
        conn.execute(
            f"CREATE TABLE {table} (delivery_id UUID, attempt INT, receipt JSONB, "
            "PRIMARY KEY (delivery_id, attempt))"
        )
        conn.commit()
        writer = threading.Thread(target=write, args=(conn,), name="bench-floor-writer")
        with (
            asyncio.Runner(loop_factory=event_loop_factory()) as runner,
            cpu.measure(use, processes) as measured,
        ):
            t0 = time.perf_counter()
            writer.start()
            runner.run(_bare(receiver.url, bodies, concurrency, record))
            finished.set()
            writer.join()
            seconds = time.perf_counter() - t0
        stored = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    if not stored or stored[0] != len(bodies):
        raise RuntimeError(f"bench: the floor recorded {stored} of {len(bodies)} attempts")
    measured.operations += len(bodies)
    return len(bodies) / seconds


def throughput(receiver: Receiver, total: int) -> tuple[float, float, float]:
    """Figure 2 in one process beside its baseline and its floor, to the same receiver with
    the same bodies: (ours, bare, floor) deliveries/s; the CPU of each goes to
    `bench.cpu.BUDGETS`."""
    sent, sent_bare, sent_floor = cpu.Use(), cpu.Use(), cpu.Use()
    with pg_schema() as (url, schema):
        log.info("checkpoint before the delivery figure: %.1f s", checkpoint())
        ours, bodies = sender_rate(url, receiver, total, sent)
        bare = bare_rate(receiver, bodies, use=sent_bare)
        floor = recorded_bare_rate(BASE_URL, schema, receiver, bodies, use=sent_floor)
    cpu.BUDGETS.append(
        cpu.Budget("webhook delivery, in-process sender", sent, BARE_NAME, sent_bare, 0.5)
    )
    cpu.BUDGETS.append(cpu.Budget("webhook delivery floor", sent_floor, BARE_NAME, sent_bare, 0.5))
    FLOORS.append(
        Floor(
            "figure 2, webhook delivery",
            "the bare sender, each attempt's receipt COPYed and committed in batches by a writer "
            "thread",
            ours,
            floor,
            bare,
            0.5,
        )
    )
    return ours, bare, floor


@dataclass
class Latency:
    """Figure 3's run: each received job's commit-to-webhook time (ms, sorted) of `total` jobs
    created, the CPU meanwhile (`bench.cpu`: the delivery process, this process that creates
    the jobs, the receiver, PostgreSQL), and the (p50, p99) ms of each stage of the path."""

    latencies: list[float]
    total: int
    use: cpu.Use
    stages: dict[str, tuple[float, float]]

    def explained(self, at: int) -> str:
        """Where the time went, at the stages' p50 (`at` 0) or p99 (1), and how busy the
        delivery process and the machine were: queueing behind a busy core shows here."""
        stages = ", ".join(f"{name} {values[at]:.0f}" for name, values in self.stages.items())
        return (
            f"stages {('p50', 'p99')[at]} ms: {stages or 'not read'}; delivery process at "
            f"{self.use.share(DELIVERY_PROCESS):.0%} of a core, "
            f"machine {self.use.utilisation:.0%} busy"
        )


def latency(url: str, quick: bool) -> Latency:
    """Figure 3 at `LATENCY_RATE` jobs/s."""
    seconds = 5.0 if quick else 20.0
    service = bench_service(url, allow_private_targets=True)
    with running_receiver(record=True) as receiver:
        tenant_id, _ = _endpoint(service, receiver.url)
        errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed below; its log if it fails
        process = _delivery_process(url, errors)
        try:
            committed: dict[str, float] = {}

            def create(i: int) -> None:
                created = service.ledger.create_job(
                    bench_job(i), tenant_id=tenant_id, idempotency_key=f"lat-{i}", actor="bench"
                )
                committed[str(created.job.id)] = time.time()

            # Warm up: the delivery process is up and the whole path works before timing.
            create(-1)
            try:
                _wait(lambda: receiver.count() >= 1, "the delivery process", 60)
            except RuntimeError:
                errors.seek(0)
                sys.stderr.write(errors.read()[-4000:].decode(errors="replace"))
                raise
            warm = receiver.count()
            committed.clear()
            total = int(seconds * LATENCY_RATE)
            log.info("delivery process %d is up; %d jobs at %g/s", process.pid, total, LATENCY_RATE)
            processes = {
                DELIVERY_PROCESS: process.pid,
                "bench (creates)": os.getpid(),
                "receiver": receiver.pid,
            }
            with cpu.measure(None, processes) as use:
                start = time.perf_counter()
                for i in range(total):
                    ahead = start + i / LATENCY_RATE - time.perf_counter()
                    if ahead > 0:
                        time.sleep(ahead)
                    create(i)
                try:  # what has not arrived by then counts as lost (the target is then not met)
                    _wait(lambda: receiver.count() >= warm + total, "every webhook", 120)
                except RuntimeError as error:
                    log.warning("%s", error)
            use.operations += total
            log.info(
                "the delivery process used %.1f ms CPU per job",
                use.per_operation_ms(use.parts[DELIVERY_PROCESS]),
            )
            arrivals: dict[str, float] = {}
            for arrived, body in receiver.received():
                job_id = body["data"]["job_id"]
                if job_id in committed:
                    arrivals.setdefault(job_id, arrived)
            stages = _stages(url, committed, arrivals)
            for stage, (p50, p99) in stages.items():
                log.info("%s: p50 %.1f ms, p99 %.1f ms", stage, p50, p99)
        finally:
            stop_child(process, timeout=30)
            errors.close()
            service.close()
    latencies = sorted((arrivals[j] - committed[j]) * 1000 for j in committed if j in arrivals)
    return Latency(latencies, total, use, stages)


def _stages(
    url: str, committed: dict[str, float], arrivals: dict[str, float]
) -> dict[str, tuple[float, float]]:
    """Where the time went, (p50, p99) ms of each stage: commit -> delivery made by the
    fan-out -> attempt started by the sender -> webhook received."""
    with psycopg.connect(url.split("?")[0], autocommit=True) as conn:
        schema = url.split("schema=")[1]
        rows = conn.execute(
            f"SELECT job_id, created_at, last_attempt_at FROM {schema}.delivery_queue"
        ).fetchall()
    made, attempted, sent = [], [], []
    for job_id, created_at, attempted_at in rows:
        if job_id not in committed or job_id not in arrivals or attempted_at is None:
            continue
        created = parse_utc_text(created_at)
        started = parse_utc_text(attempted_at)
        assert created is not None
        assert started is not None
        made.append((created.timestamp() - committed[job_id]) * 1000)
        attempted.append((started.timestamp() - created.timestamp()) * 1000)
        sent.append((arrivals[job_id] - started.timestamp()) * 1000)
    stages = {}
    for stage, values in (("fan-out", made), ("queue + claim", attempted), ("HTTP", sent)):
        if values:
            values.sort()
            stages[stage] = (statistics.median(values), percentile(values, 0.99))
    return stages


def percentile(values: list[float], q: float) -> float:
    return values[max(int(len(values) * q) - 1, 0)] if values else float("nan")


def delivery_section(quick: bool) -> tuple[list[Figure], str]:
    """Figures 2 and 3 (for the main table) and the client comparison (its own table)."""
    figures = []
    with running_receiver() as receiver:
        results: list[ClientResult] = measure_clients(receiver.url, quick)
        # The bare sender is aiohttp: the fastest client in every comparison we ran.
        single = next(r for r in results if r.client == "aiohttp" and r.concurrency == 1)
        total = 500 if quick else 5000
        ours, bare, floor = throughput(receiver, total)
    with pg_schema() as (url, _):
        log.info("checkpoint before the two-process delivery figure: %.1f s", checkpoint())
        scaled, scaled_cpu = processes_rate(url, total, 2)
    with pg_schema() as (url, _):
        log.info("checkpoint before the projector delivery figure: %.1f s", checkpoint())
        beside, beside_cpu = processes_rate(url, total, 1, with_projector=True)
    figures += [
        Figure(
            f"webhook delivery, {total} pending, signed + attempt recorded (PostgreSQL)",
            "deliveries/s",
            ours,
            BARE_NAME,
            bare,
            0.5,
        ),
        Figure(FLOOR_NAME, "deliveries/s", floor, BARE_NAME, bare, None),
        Figure(
            f"same, 2 processes `ledger serve --role delivery`, 32 in flight each, first to last "
            f"arrival ({scaled_cpu:.2f} ms CPU per delivery, start-up included)",
            "deliveries/s",
            scaled,
            BARE_NAME,
            bare,
            0.5,
        ),
        Figure(
            f"same, 1 `--role delivery` process beside a `--role projector` process that runs "
            f"the views, first to last arrival ({beside_cpu:.2f} ms CPU per delivery in the "
            "delivery process, start-up included)",
            "deliveries/s",
            beside,
            BARE_NAME,
            bare,
            0.5,
        ),
    ]
    with pg_schema() as (url, _):
        log.info("checkpoint before the latency figure: %.1f s", checkpoint())
        run = latency(url, quick)
    latencies, total = run.latencies, run.total
    p50 = statistics.median(latencies) if latencies else float("nan")
    p99 = percentile(latencies, 0.99)
    lost = total - len(latencies)
    floor = 1000.0 / single.rate if single.rate else 0.0
    for at, (label, value, target) in enumerate(
        (("p50", p50, P50_TARGET_MS), ("p99", p99, P99_TARGET_MS))
    ):
        met = "met" if value <= target and not lost else "NOT met"
        figures.append(
            Figure(
                f"commit -> webhook received, {LATENCY_RATE:.0f} jobs/s, {label} "
                f"(target <= {target:.0f} ms: {met}; {len(latencies)} of {total} received; "
                f"{run.explained(at)})",
                "ms",
                value,
                "one bare aiohttp request, mean at concurrency 1",
                floor,
                None,
            )
        )
    text = (
        "HTTP clients, signed ~1 KB POSTs to a local aiohttp receiver answering 200 "
        f"({'quick: 1' if quick else '4'} s each; requests/s and p99 latency):\n\n"
        + client_table(results)
    )
    return figures, text


def main() -> int:
    """`python -m bench.delivery_figures [--quick] throughput|latency|processes N`: one figure
    alone."""
    quick = "--quick" in sys.argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if "latency" in sys.argv:
        with pg_schema() as (url, _):
            run = latency(url, quick)
        latencies = run.latencies
        print(
            f"{len(latencies)}/{run.total} p50 {statistics.median(latencies):.1f} ms "
            f"p99 {percentile(latencies, 0.99):.1f} ms max {latencies[-1]:.1f} ms\n"
            f"{run.explained(0)}\n{run.explained(1)}"
        )
    elif "processes" in sys.argv:
        with pg_schema() as (url, _):
            rate, cpu_ms = processes_rate(
                url,
                500 if quick else 5000,
                int(sys.argv[-1]),
                with_projector="--projector" in sys.argv,
            )
        print(f"{sys.argv[-1]} processes {rate:,.0f}/s, {cpu_ms:.2f} ms CPU per delivery")
    else:
        with running_receiver() as receiver:
            ours, bare, floor = throughput(receiver, 500 if quick else 5000)
        print(
            f"ours {ours:,.0f}/s bare {bare:,.0f}/s floor {floor:,.0f}/s: ratio {ours / bare:.2f}, "
            f"floor {floor / bare:.2f}"
        )
        print(cpu.table(cpu.BUDGETS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
