"""Concurrent creates of one idempotency key give exactly one job: threads on both stores, and
separate processes on PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from ledger.job import Job
from tests.conftest import make_new_job

ROOT = Path(__file__).resolve().parents[2]
KEYS = [f"order-{i}" for i in range(10)]

# Each process builds its own service, says "ready", waits for "go" on stdin, then creates
# every key; it prints one JSON line per key: {"key", "job_id", "created"}.
CREATOR = """
import json, sys
from jobledger.bootstrap import build
from jobledger.settings import Settings
from tests.conftest import make_new_job
service = build(Settings(database_url=sys.argv[1]), run_migrations=False)
print("ready", flush=True)
sys.stdin.readline()
for key in sys.argv[2:]:
    r = service.ledger.create_job(make_new_job(), tenant_id="t", idempotency_key=key, actor="p")
    print(json.dumps({"key": key, "job_id": str(r.job.id), "created": r.created}), flush=True)
service.close()
"""


def created_events(ledger) -> list:
    notes = ledger.recorder.select_notifications(
        0, 100_000, topics=[Job.JobCreated.TOPIC], inclusive_of_start=False
    )
    return [(n.originator_id, n.originator_version) for n in notes]


def test_threads_creating_one_key_make_one_job(ledger) -> None:
    barrier = threading.Barrier(12)
    results = []
    errors = []

    def create() -> None:
        barrier.wait()
        try:
            results.append(
                ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="k", actor="a")
            )
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=create) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(r.created for r in results) == 1
    assert len({r.job.id for r in results}) == 1
    assert len(created_events(ledger)) == 1


@pytest.mark.postgres
@pytest.mark.slow
def test_processes_creating_the_same_keys_make_one_job_each(postgres_url, ledger_on) -> None:
    ledger = ledger_on(postgres_url)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CREATOR, postgres_url, *KEYS],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        for _ in range(4)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0]
    rows = [json.loads(line) for out in outputs for line in out.splitlines()]
    assert len(rows) == 4 * len(KEYS)
    created = Counter(r["key"] for r in rows if r["created"])
    assert created == Counter(KEYS)  # exactly one creator per key
    ids = {r["key"]: set() for r in rows}
    for r in rows:
        ids[r["key"]].add(r["job_id"])
    assert all(len(v) == 1 for v in ids.values())
    assert len(created_events(ledger)) == len(KEYS)


@pytest.fixture
def ledger_on(clock):
    from jobledger.bootstrap import build
    from jobledger.settings import Settings

    services = []

    def make(url: str):
        service = build(Settings(database_url=url), clock=clock)
        services.append(service)
        return service.ledger

    yield make
    for service in services:
        service.close()
