"""The receipt: a pure function of a job and its events, and its Markdown rendering."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from ledger.audit import GENESIS
from ledger.job import AttemptFailure, Job
from ledger.receipt import build_receipt, render_markdown
from ledger.retry import RetryPolicy
from tests.conftest import make_new_job

T0 = datetime(2026, 11, 23, 10, tzinfo=UTC)
WORKER = "worker:w1"


def job_with_history() -> tuple[Job, list[Any]]:
    new = make_new_job(pin={"title": "A *bold* | cat"})
    body = new.as_dict()
    job = Job.create(
        tenant_id="t1",
        idempotency_key="k1",
        request_fingerprint=new.fingerprint(),
        account_id=new.account_id,
        board_id=new.board_id,
        pin=body["pin"],
        publish_at=None,
        mode="sandbox",
        simulate=None,
        metadata={},
        actor="key:abc",
        now=T0,
    )
    job.schedule(now=T0)
    job.start_attempt(worker_id=WORKER, lease_seconds=30, now=T0 + timedelta(seconds=1))
    job.record_failure(
        attempt=1,
        failure=AttemptFailure(
            "timeout", "no answer", retryable=True, ambiguous=True, receipt={"rid": "r1"}
        ),
        policy=RetryPolicy(),
        actor=WORKER,
        now=T0 + timedelta(seconds=11),
        rng=random.Random(1),
    )
    job.cancel(actor="key:abc", reason="changed my mind", now=T0 + timedelta(seconds=20))
    job.requeue(actor="key:abc", reason="changed it back", now=T0 + timedelta(seconds=30))
    job.schedule(now=T0 + timedelta(seconds=31))
    job.start_attempt(worker_id=WORKER, lease_seconds=30, now=T0 + timedelta(seconds=32))
    job.record_success(
        attempt=2,
        external_ref="pin-9",
        receipt={"rid": "r2"},
        actor=WORKER,
        now=T0 + timedelta(seconds=33),
    )
    return job, list(job.collect_events())


def test_receipt_tells_the_whole_story() -> None:
    job, events = job_with_history()
    receipt = build_receipt(job, events)
    assert receipt["job"]["id"] == str(job.id)
    assert receipt["outcome"]["state"] == "published"
    assert receipt["outcome"]["external_ref"] == "pin-9"
    first, second = receipt["attempts"]
    assert first["outcome"] == "failed_retrying"
    assert first["error"] == {
        "code": "timeout",
        "message": "no answer",
        "retryable": True,
        "ambiguous": True,
    }
    assert first["receipt"] == {"rid": "r1"}
    assert first["retry"]["delay_seconds"] >= 0
    assert second["outcome"] == "published"
    assert second["external_ref"] == "pin-9"
    assert [a["type"] for a in receipt["actions"]] == ["JobCanceled", "JobRequeued"]
    evidence = receipt["evidence"]
    assert evidence["events"] == len(events) == 9
    assert evidence["first_event"]["prev_hash"] == GENESIS
    assert evidence["first_event"]["hash"] == events[0].hash
    assert evidence["last_event"]["hash"] == events[-1].hash
    assert str(job.id) in evidence["how_to_verify"]
    assert build_receipt(job, events) == receipt  # pure: same input, same receipt


def test_markdown_receipt() -> None:
    job, events = job_with_history()
    text = render_markdown(build_receipt(job, events))
    assert text.startswith(f"# Receipt for job {job.id}\n")
    assert "**Outcome: published** (Pinterest pin pin-9)" in text
    assert "1. failed_retrying" in text
    assert "(ambiguous: the upstream may have applied it)" in text
    assert "2. published" in text
    assert "JobCanceled by `key:abc`: changed my mind" in text
    assert events[-1].hash in text
    assert "A \\*bold\\* \\| cat" in text  # user text cannot become Markdown structure
