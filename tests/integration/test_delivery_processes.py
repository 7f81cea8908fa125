"""A real `ledger serve --role delivery` process killed with SIGKILL mid-run and restarted, on
both stores: every state change is delivered at least once, a repeat always carries the same
`webhook-id`, and no attempt is recorded twice. Bounded: each wait gives up after `DEADLINE`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from delivery.crypto import generate_key
from jobledger.bootstrap import build
from jobledger.settings import Settings
from jobledger.webhook_settings import WebhookSettings
from ledger.endpoint import EndpointSettings
from storage.sql import SqlStore
from tests.conftest import make_new_job
from tests.fakes.receiver import Reply
from tests.fakes.receiver import webhook_receiver as webhook_receiver  # a fixture

pytestmark = [pytest.mark.slow]

LEDGER = str(Path(sys.executable).parent / "ledger")
DEADLINE = 40.0
JOBS = 250  # x 2 endpoints = 500 deliveries


class Process:
    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp = tmp
        self.env = env
        self.procs: dict[str, subprocess.Popen[Any]] = {}

    def start(self, name: str) -> subprocess.Popen[Any]:
        with open(self.tmp / f"{name}.log", "w") as log:
            proc = subprocess.Popen(
                [LEDGER, "serve", "--role", "delivery"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text()

    def wait_for(self, predicate: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while not predicate():
            for name, proc in self.procs.items():
                assert proc.poll() is None or proc.returncode == -signal.SIGKILL, (
                    f"{name} exited {proc.returncode}:\n{self.log(name)[-3000:]}"
                )
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)

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


def queue_counts(store: SqlStore) -> dict[str, int]:
    try:
        with store.transaction() as tx:
            rows = tx.execute(
                "SELECT state, COUNT(*) FROM delivery_queue GROUP BY state"
            ).fetchall()
    except Exception:  # the child has not made the view yet
        return {}
    return {str(state): int(count) for state, count in rows}


def test_sigkill_mid_run_then_restart_delivers_every_state_change_at_least_once(
    database_url, tmp_path, webhook_receiver
):
    key = generate_key()
    settings = Settings(
        database_url=database_url,
        webhooks=WebhookSettings(secret_key=key, allow_private_targets=True),
    )
    service = build(settings)
    ledger = service.ledger
    store = SqlStore(service.database)
    receiver = webhook_receiver(default=Reply(204, delay=0.02))  # attempts are in flight
    tenant_id = str(ledger.create_tenant("crash", actor="admin:test").tenant.id)
    paths = {}
    for path in ("/one", "/two"):
        registered = ledger.register_endpoint(
            tenant_id, EndpointSettings(url=receiver.url(path), event_types=("*",)), actor="t"
        )
        paths[path] = str(registered.endpoint.id)
    job_ids = set()
    for i in range(JOBS):
        created = ledger.create_job(
            make_new_job(), tenant_id=tenant_id, idempotency_key=f"crash-{i}", actor="key:t"
        )
        job_ids.add(str(created.job.id))
    processes = Process(
        tmp_path,
        {
            **os.environ,
            "LEDGER_DATABASE_URL": database_url,
            "LEDGER_SECRET_KEY": key,
            "LEDGER_ALLOW_PRIVATE_TARGETS": "1",
            "LEDGER_WEBHOOK_TIMEOUT_SECONDS": "1",
            "LEDGER_WEBHOOK_CONCURRENCY": "16",
            "LEDGER_WEBHOOK_ENDPOINT_CONCURRENCY": "8",
            "LEDGER_AUDIT_CHECKPOINT_SECONDS": "0",
            "LEDGER_DB_POOL_SIZE": "4",
            "LEDGER_DB_MAX_OVERFLOW": "4",
        },
    )
    expected = len(job_ids) * len(paths)
    try:
        try:
            first = processes.start("first")
            processes.wait_for(lambda: len(receiver.requests) >= 100, "the first sender mid-run")
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
            assert len(receiver.requests) < expected, "the kill came too late to test anything"
            processes.start("second")
            processes.wait_for(
                lambda: queue_counts(store).get("succeeded") == expected,
                "every delivery succeeded",
            )
        finally:
            codes = processes.stop_all()
        with store.transaction() as tx:
            attempts = [
                int(r[0]) for r in tx.execute("SELECT attempts FROM delivery_queue").fetchall()
            ]
    finally:
        store.close()
        service.close()
    assert codes["first"] == -signal.SIGKILL
    assert codes["second"] == 0, processes.log("second")[-3000:]
    assert "delivery sender" in processes.log("second")

    received: dict[tuple[str, str], set[str]] = defaultdict(set)
    for request in receiver.requests:
        received[(request.path, request.json()["data"]["job_id"])].add(
            request.headers["webhook-id"]
        )
    # every state change reached every endpoint at least once ...
    assert set(received) == {(path, job_id) for path in paths for job_id in job_ids}
    # ... a repeat (sent by the killed process, not recorded) kept its webhook-id ...
    assert all(len(ids) == 1 for ids in received.values())
    assert len({next(iter(ids)) for ids in received.values()}) == expected
    # ... and no attempt was recorded twice
    assert attempts == [1] * expected
    print(f"repeated requests after the kill: {len(receiver.requests) - expected}")
