"""Real worker processes (`ledger serve --role worker`) against one PostgreSQL and a fake
Pinterest in this process: two workers publish 500 jobs exactly once; a worker killed with
SIGKILL mid-run and restarted loses nothing and posts nothing twice. Bounded: each test gives
up after `DEADLINE` seconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobledger.bootstrap import Service, build
from jobledger.settings import Settings
from projections.job_status import JobStatusProjection
from projections.runner import ProjectionRunner
from storage.sql import SqlStore
from tests.conftest import make_new_job
from tests.fakes.fake_pinterest import FakePinterest
from worker.runner import prepare_tables

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

LEDGER = str(Path(sys.executable).parent / "ledger")
DEADLINE = 50.0
ACCOUNTS = 5


@pytest.fixture
def fake() -> Iterator[FakePinterest]:
    server = FakePinterest(tokens={"token-1"}).start()
    yield server
    server.stop()


@pytest.fixture
def pg_service(postgres_url) -> Iterator[Service]:
    service = build(Settings(database_url=postgres_url))
    store = SqlStore(service.database)
    prepare_tables(
        store, ProjectionRunner(service.ledger, store, JobStatusProjection(service.ledger))
    )
    store.close()
    yield service
    service.close()


class Workers:
    def __init__(self, url: str, fake: FakePinterest, tmp: Path, **env: str) -> None:
        self.env = {
            **os.environ,
            "LEDGER_DATABASE_URL": url,
            "LEDGER_PINTEREST_API_BASE": fake.base_url,
            "LEDGER_PINTEREST_TOKENS": json.dumps(
                {f"acct-{i}": "token-1" for i in range(ACCOUNTS)}
            ),
            "LEDGER_PINTEREST_TIMEOUT_SECONDS": "5",
            "LEDGER_WORKER_POLL_SECONDS": "0.2",
            "LEDGER_WORKER_LEASE_SECONDS": "30",
            "LEDGER_WORKER_CONCURRENCY": "8",
            "LEDGER_JOB_RETRY_BASE_SECONDS": "0.05",
            "LEDGER_JOB_RETRY_CAP_SECONDS": "0.5",
            "LEDGER_PACING_ACCOUNT_CAPACITY": "100000",
            "LEDGER_PACING_ACCOUNT_REFILL_PER_SECOND": "10000",
            "LEDGER_PACING_GLOBAL_CAPACITY": "100000",
            "LEDGER_PACING_GLOBAL_REFILL_PER_SECOND": "10000",
            "LEDGER_AUDIT_CHECKPOINT_SECONDS": "0",
            "LEDGER_DB_POOL_SIZE": "4",
            "LEDGER_DB_MAX_OVERFLOW": "4",
            **env,
        }
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[Any]] = {}

    def start(self, name: str) -> subprocess.Popen[Any]:
        with open(self.tmp / f"{name}.log", "w") as log:  # the child keeps its own copy
            proc = subprocess.Popen(
                [LEDGER, "serve", "--role", "worker"],
                env={**self.env, "LEDGER_WORKER_ID": f"worker:{name}"},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text()

    def stop_all(self) -> dict[str, int | None]:
        codes: dict[str, int | None] = {}
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait(timeout=10)
        return codes


def create_jobs(service: Service, n: int, prefix: str) -> list[Any]:
    ids = []
    for i in range(n):
        new = make_new_job(
            mode="pinterest",
            account_id=f"acct-{i % ACCOUNTS}",
            pin={"title": f"{prefix} {i}", "link": f"https://example.com/{prefix}/{i}"},
        )
        ids.append(
            service.ledger.create_job(
                new, tenant_id="t", idempotency_key=f"{prefix}-{i}", actor="key:k"
            ).job.id
        )
    return ids


def states(service: Service) -> Counter[str]:
    with service.database.connect() as conn:
        rows = conn.execute("SELECT state, count(*) FROM job_status GROUP BY state").fetchall()
    return Counter({str(state): int(count) for state, count in rows})


def wait_for(predicate, what: str, workers: Workers) -> None:
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        for name, proc in workers.procs.items():
            assert proc.poll() is None or proc.returncode == -signal.SIGKILL, (
                f"{name} exited {proc.returncode}:\n{workers.log(name)[-3000:]}"
            )
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_two_workers_publish_500_jobs_exactly_once(postgres_url, pg_service, fake, tmp_path):
    ids = create_jobs(pg_service, 500, "bulk")
    workers = Workers(postgres_url, fake, tmp_path)
    try:
        workers.start("a")
        workers.start("b")
        wait_for(lambda: states(pg_service)["published"] == 500, "500 published", workers)
    finally:
        codes = workers.stop_all()
    assert codes == {"a": 0, "b": 0}, workers.log("a")[-2000:] + workers.log("b")[-2000:]
    titles = Counter(p["body"]["title"] for p in fake.posts)
    assert len(titles) == 500
    assert set(titles.values()) == {1}  # every pin posted exactly once
    runners: Counter[str] = Counter()
    for job_id in ids:
        kinds = Counter(type(e).__name__ for e in pg_service.ledger.job_events(job_id))
        assert kinds["AttemptStarted"] == 1, job_id  # no attempt started (or run) twice
        assert kinds["JobPublished"] == 1, job_id
        assert kinds["AttemptFailed"] == 0, job_id
        started = next(
            e for e in pg_service.ledger.job_events(job_id) if type(e).__name__ == "AttemptStarted"
        )
        runners[started.worker_id] += 1
    assert set(runners) <= {"worker:a", "worker:b"}
    assert "stopped on signal SIGTERM" in workers.log("a")


def test_sigkill_mid_run_then_restart_loses_nothing_and_posts_nothing_twice(
    postgres_url, pg_service, fake, tmp_path
):
    fake.post_delay = 0.4  # slow upstream: attempts are in flight when the worker dies
    ids = create_jobs(pg_service, 60, "kill")
    workers = Workers(
        postgres_url, fake, tmp_path, LEDGER_WORKER_LEASE_SECONDS="2", LEDGER_WORKER_CONCURRENCY="4"
    )
    try:
        first = workers.start("first")

        def mid_run() -> bool:
            now = states(pg_service)
            return now["published"] >= 8 and now["running"] >= 1

        wait_for(mid_run, "the first worker to be mid-run", workers)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        workers.start("second")
        wait_for(
            lambda: states(pg_service)["published"] == len(ids), "every job published", workers
        )
    finally:
        codes = workers.stop_all()
    assert codes["first"] == -signal.SIGKILL
    assert codes["second"] == 0, workers.log("second")[-3000:]
    titles = Counter(p["body"]["title"] for p in fake.posts)
    assert len(titles) == len(ids)
    assert set(titles.values()) == {1}, [t for t, n in titles.items() if n > 1]
    lost = 0
    for job_id in ids:
        job = pg_service.ledger.get_job(job_id)
        assert job.state == "published"
        events = pg_service.ledger.job_events(job_id)
        lost += sum(1 for e in events if getattr(e, "error_code", None) == "worker_lost")
        assert sum(1 for e in events if type(e).__name__ == "JobPublished") == 1
    assert lost >= 1  # the killed worker's in-flight attempts were recovered by the reaper
