"""Figure 7, the full lifecycle: sandbox jobs/s from `POST /v1/jobs` to `job.published`
received, with two webhook endpoints subscribed to every event type (two counting receivers
on 127.0.0.1), on SQLite and on PostgreSQL, and the CPU seconds per job summed over the
service's processes (`ledger serve --role api`, `--role worker`, `--role delivery`).

The clock runs from the first create to the moment both receivers have had `job.published`
for every job. There is no fair raw baseline for the whole path (each job is ~4 ledger events,
~8 signed webhooks and their recorded attempts), so the ratio column shows "-".
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench import plots
from bench.scale_figures import service_env
from bench.support import (
    Figure,
    Processes,
    free_port,
    hammer_creates,
    new_tenant,
    pg_schema,
    received,
    wait_http,
)

ROLES = ("api", "worker", "delivery")


def fast_env(url: str) -> dict[str, str]:
    """The service's settings for a throughput run: pacing out of the way (sandbox jobs,
    nothing upstream to protect), private targets allowed (the receivers are local)."""
    return {
        **service_env(url),
        "LEDGER_ALLOW_PRIVATE_TARGETS": "1",
        "LEDGER_WORKER_CONCURRENCY": "8",
        "LEDGER_WORKER_POLL_SECONDS": "0.2",
        "LEDGER_PACING_ACCOUNT_CAPACITY": "100000",
        "LEDGER_PACING_ACCOUNT_REFILL_PER_SECOND": "100000",
        "LEDGER_PACING_GLOBAL_CAPACITY": "100000",
        "LEDGER_PACING_GLOBAL_REFILL_PER_SECOND": "100000",
    }


@contextmanager
def store_url(kind: str) -> Iterator[str]:
    if kind == "PostgreSQL":
        with pg_schema("life") as (url, _):
            yield url
    else:
        with tempfile.TemporaryDirectory(prefix="bench-life-") as tmp:
            yield f"sqlite:///{Path(tmp) / 'ledger.db'}"


def lifecycle(kind: str, jobs: int) -> tuple[float, float, float]:
    """(jobs/s create -> published at both endpoints, CPU ms per job, p99 of the creates)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with store_url(kind) as url, Processes(fast_env(url)) as procs:
        receivers = []
        for n in range(2):
            rport = free_port()
            proc = procs.start(
                f"receiver{n}", [sys.executable, "-m", "bench.support", "receive", str(rport)]
            )
            wait_http(f"http://127.0.0.1:{rport}/_count", proc, "the receiver")
            receivers.append(rport)
        procs.role("api", port=port)
        wait_http(f"{base}/healthz", procs.procs["api"], "ledger serve --role api")
        procs.role("worker")
        procs.role("delivery")
        auth = new_tenant(base, "life")
        for rport in receivers:
            response = httpx.post(
                f"{base}/v1/endpoints",
                json={"url": f"http://127.0.0.1:{rport}/hook", "event_types": ["*"]},
                headers=auth,
            )
            response.raise_for_status()
        time.sleep(1.0)  # let the worker and sender finish starting (their tables, followers)
        idle0 = {role: procs.cpu([role]) for role in ROLES}
        time.sleep(2.0)  # what the idle service burns (followers polling), for the report
        cpu0 = {role: procs.cpu([role]) for role in ROLES}
        t0 = time.perf_counter()
        creates = hammer_creates(base, auth, jobs, exact=True)  # that many jobs
        deadline = time.monotonic() + 300 + jobs  # generous: a loaded machine crawls
        created = creates.requests - creates.errors
        while min(received(p)["job.published"] for p in receivers) < created:
            procs.check()
            if time.monotonic() > deadline:
                counts = [dict(received(p)) for p in receivers]
                raise RuntimeError(f"{kind}: not every job.published arrived: {counts}")
            time.sleep(0.05)
        seconds = time.perf_counter() - t0
        cpu = {role: procs.cpu([role]) - cpu0[role] for role in ROLES}
    per_job = {role: cpu[role] / created * 1000 for role in ROLES}
    idle = {role: (cpu0[role] - idle0[role]) / 2.0 * 1000 for role in ROLES}
    print(
        f"lifecycle {kind}: {created} jobs ({creates.errors} refused) in {seconds:.1f} s; "
        "CPU ms/job "
        + ", ".join(f"{role} {ms:.1f}" for role, ms in per_job.items())
        + "; idle CPU ms/s "
        + ", ".join(f"{role} {ms:.0f}" for role, ms in idle.items())
    )
    plots.record_latency(f"POST /v1/jobs, lifecycle ({kind})", creates)
    return created / seconds, sum(per_job.values()), creates.p99_ms


def lifecycle_figures(quick: bool) -> list[Figure]:
    jobs = 128 if quick else 1000
    figures = []
    for kind in ("SQLite", "PostgreSQL"):
        rate, cpu_ms, p99 = lifecycle(kind, jobs)
        figures.append(
            Figure(
                f"lifecycle create -> published, 2 endpoints, {kind} "
                f"({cpu_ms:.1f} ms CPU/job over api+worker+delivery, create p99 {p99:.0f} ms)",
                "jobs/s",
                rate,
                "- (no raw equivalent: ~4 events + ~8 signed webhooks per job)",
                0.0,
                None,
            )
        )
    return figures
