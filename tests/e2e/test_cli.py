"""The `ledger` console script as installed: timelines, checkpoints and `serve`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ledger.job import AttemptFailure
from tests.conftest import make_new_job
from tests.serving import free_port

ROOT = Path(__file__).resolve().parents[2]
LEDGER = str(Path(sys.executable).parent / "ledger")


def run(database_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LEDGER_DATABASE_URL": database_url}
    return subprocess.run(
        [LEDGER, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_timeline_prints_events_oldest_first(database_url, ledger) -> None:
    job_id = ledger.create_job(
        make_new_job(), tenant_id="t", idempotency_key="k", actor="key:k"
    ).job.id
    ledger.schedule(job_id)
    attempt = ledger.start_attempt(job_id, worker_id="worker:w", lease_seconds=30).job.attempts
    ledger.record_failure(
        job_id,
        attempt=attempt,
        failure=AttemptFailure("rate_limited", "Pinterest answered 429", retryable=True),
        actor="worker:w",
    )

    text = run(database_url, "jobs", "timeline", str(job_id))
    assert text.returncode == 0, text.stderr
    lines = [line for line in text.stdout.splitlines() if line.startswith("v")]
    assert [line.split()[2] for line in lines] == [
        "JobCreated",
        "JobScheduled",
        "AttemptStarted",
        "AttemptFailed",
    ]
    assert "Pinterest answered 429" in text.stdout

    as_json = run(database_url, "jobs", "timeline", str(job_id), "--json")
    assert as_json.returncode == 0, as_json.stderr
    events = json.loads(as_json.stdout)["events"]
    assert [e["version"] for e in events] == [1, 2, 3, 4]
    assert events[3]["data"]["error_code"] == "rate_limited"
    assert events[3]["prev_hash"] == events[2]["hash"]


def test_timeline_of_unknown_job_exits_3(database_url, ledger) -> None:
    missing = run(database_url, "jobs", "timeline", "3b4bf731-6842-5794-aef1-6574a7e1790a")
    assert missing.returncode == 3
    assert "No job with id" in missing.stderr
    bad = run(database_url, "jobs", "timeline", "not-a-uuid")
    assert bad.returncode == 2
    assert "not a job id" in bad.stderr


def test_checkpoint_command(database_url, ledger) -> None:
    ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="k", actor="key:k")
    first = run(database_url, "audit", "checkpoint", "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["count"] == 1
    again = run(database_url, "audit", "checkpoint")
    assert "No new events" in again.stdout


def test_bad_configuration_is_named(tmp_path) -> None:
    bad = run("mysql://nope/x", "verify")
    assert bad.returncode == 2
    assert "LEDGER_DATABASE_URL" in bad.stderr


@pytest.mark.slow
def test_serve_starts_on_a_fresh_sqlite_file_and_stops_on_sigterm(tmp_path) -> None:
    port = free_port()
    db = tmp_path / "fresh" / "ledger.db"
    env = {**os.environ, "LEDGER_DATABASE_URL": f"sqlite:///{db}"}
    proc = subprocess.Popen(
        [LEDGER, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "server did not start within 30 s"
                time.sleep(0.1)
        assert health.status_code == 200
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert ready.status_code == 200
        assert db.exists()  # tables were created on first start
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, output
    assert "stopped on signal SIGTERM" in output


def test_explain_tells_the_story_and_receipt_prints_both_formats(database_url, ledger) -> None:
    from ledger.endpoint import EndpointSettings
    from projections.delivery_fanout import DeliveryFanout
    from projections.delivery_queue import DeliveryQueueProjection
    from projections.runner import ProjectionRunner
    from storage.config import parse_database_url
    from storage.sql import SqlStore

    settings = EndpointSettings(url="https://hooks.example.com/in", event_types=("job.failed",))
    ledger.register_endpoint("t", settings, actor="key:k")
    job_id = ledger.create_job(
        make_new_job(), tenant_id="t", idempotency_key="k", actor="key:k"
    ).job.id
    ledger.schedule(job_id)
    attempt = ledger.start_attempt(job_id, worker_id="worker:w", lease_seconds=30).job.attempts
    ledger.record_failure(
        job_id,
        attempt=attempt,
        failure=AttemptFailure(
            "board_not_found", "no board", retryable=False, receipt={"status": 404}
        ),
        actor="worker:w",
    )
    store = SqlStore(parse_database_url(database_url))
    try:
        for projection in (DeliveryFanout(ledger), DeliveryQueueProjection(ledger)):
            runner = ProjectionRunner(ledger, store, projection)
            runner.setup()
            runner.catch_up()
    finally:
        store.close()

    told = run(database_url, "jobs", "explain", str(job_id))
    assert told.returncode == 0, told.stderr
    assert "Attempt 1 started at" in told.stdout
    assert "after Pinterest answered 404 (the board does not exist); retrying would not help" in (
        told.stdout
    )
    assert "The job.failed webhook was queued at" in told.stdout
    as_json = json.loads(run(database_url, "jobs", "explain", str(job_id), "--json").stdout)
    assert [s["type"] for s in as_json["story"]] == [
        "JobCreated",
        "JobScheduled",
        "AttemptStarted",
        "JobFailedTerminally",
        "DeliveryCreated",
    ]

    markdown = run(database_url, "jobs", "receipt", str(job_id))
    assert markdown.returncode == 0, markdown.stderr
    assert markdown.stdout.startswith("#")
    assert str(job_id) in markdown.stdout
    receipt = json.loads(
        run(database_url, "jobs", "receipt", str(job_id), "--format", "json").stdout
    )
    assert receipt["job"]["id"] == str(job_id)
    assert receipt["outcome"]["state"] == "failed_terminal"
