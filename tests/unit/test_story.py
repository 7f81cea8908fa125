"""`ledger jobs explain`: the wording of every job and delivery event type (fixed clock)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from uuid import uuid4

from ledger.clock import ManualClock
from ledger.delivery import Delivery
from ledger.job import TRANSITIONS, AttemptFailure, Job
from ledger.retry import RetryPolicy
from ledger.story import explain, render
from tests.conftest import make_new_job
from tests.unit.test_job import created

POLICY = RetryPolicy(max_attempts=3, base_seconds=40.0, cap_seconds=60.0)


def story_of_a_hard_job() -> tuple[list, ManualClock]:
    clock = ManualClock(datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC))
    job = created(clock, publish_at=None)  # its JobCreated is told in the next test
    clock.advance(1)
    job.schedule(now=clock.now())
    job.pace(
        run_at=clock.now() + timedelta(seconds=30),
        reason="account bucket empty",
        actor="w",
        now=clock.now(),
    )
    clock.advance(30)
    job.start_attempt(worker_id="worker:host:1", lease_seconds=30, now=clock.now())
    clock.advance(1)
    rate_limited = AttemptFailure(
        "rate_limited", "slow down", retryable=True, receipt={"status": 429}
    )
    job.record_failure(
        attempt=1,
        failure=rate_limited,
        policy=POLICY,
        actor="worker:host:1",
        now=clock.now(),
        rng=random.Random(1),
    )
    clock.advance(60)
    job.start_attempt(worker_id="worker:host:2", lease_seconds=30, now=clock.now())
    clock.advance(40)
    job.expire_lease(policy=POLICY, now=clock.now(), rng=random.Random(2))
    clock.advance(60)
    job.start_attempt(worker_id="worker:host:2", lease_seconds=30, now=clock.now())
    clock.advance(2)
    refused = AttemptFailure(
        "invalid_media", "image too small", retryable=False, receipt={"status": 403}
    )
    job.record_failure(
        attempt=3, failure=refused, policy=POLICY, actor="worker:host:2", now=clock.now(), rng=None
    )
    clock.advance(3600)
    job.requeue(actor="key:abc", reason="new image", now=clock.now())
    clock.advance(5)
    job.cancel(actor="key:abc", reason="client changed their mind", now=clock.now())
    return list(job.collect_events()), clock


def test_every_job_event_type_reads_as_a_sentence() -> None:
    assert explain([]) == []
    events, _ = story_of_a_hard_job()
    sentences = explain(events)
    texts = [s.text for s in sentences]
    kinds = {s.kind for s in sentences}
    assert kinds >= set(TRANSITIONS) - {"JobCreated", "JobPublished"}
    assert texts[0].startswith("Scheduled at 10:00:01 to run at 10:00:01")
    assert texts[1].startswith("Held back at 10:00:01 to keep within Pinterest's rate limits")
    assert texts[2] == "Attempt 1 started at 10:00:31 on worker:host:1."
    assert texts[3].startswith(
        "Attempt 1 failed at 10:00:32 after Pinterest answered 429 (rate limited); retried in "
    )
    assert texts[5].startswith(
        "Attempt 2 failed at 10:02:12 because the worker stopped answering (its lease expired)"
    )
    assert "the next attempt checks first" in texts[5]
    assert texts[7] == (
        "Attempt 3 failed at 10:03:14 after Pinterest answered 403 (the image was refused); "
        "retrying would not help, so the job failed."
    )
    assert texts[8] == "Requeued at 11:03:14 by API key abc for another try (new image)."
    assert texts[9] == "Canceled at 11:03:19 by API key abc (client changed their mind)."


def test_created_and_published_and_deliveries() -> None:
    clock = ManualClock(datetime(2026, 11, 23, 23, 59, 58, tzinfo=UTC))
    new = make_new_job(mode="sandbox")
    job = Job.create(
        tenant_id="t",
        idempotency_key="order-7",
        request_fingerprint=new.fingerprint(),
        account_id="acct",
        board_id="board",
        pin=new.pin.as_dict(),
        publish_at=None,
        mode=new.mode,
        simulate=None,
        metadata={},
        actor="key:k1",
        now=clock.now(),
    )
    job.schedule(now=clock.now())
    job.start_attempt(worker_id="worker:w", lease_seconds=30, now=clock.now())
    clock.advance(3)  # past midnight
    job.record_success(
        attempt=1, external_ref="pin-9", receipt={}, actor="worker:w", now=clock.now()
    )
    job_events = list(job.collect_events())

    delivery = Delivery.create(
        delivery_id=uuid4(),
        tenant_id="t",
        endpoint_id=uuid4(),
        event_type="job.published",
        payload="{}",
        job_id=str(job.id),
        actor="system",
        now=clock.now(),
    )
    clock.advance(1)
    delivery.record_attempt(
        attempt=1,
        succeeded=False,
        receipt={"status_code": 500, "latency_ms": 12.0},
        next_attempt_at=clock.now() + timedelta(seconds=5),
        actor="delivery",
        now=clock.now(),
    )
    clock.advance(5)
    delivery.record_attempt(
        attempt=2,
        succeeded=True,
        receipt={"status_code": 204, "latency_ms": 8.4},
        next_attempt_at=None,
        actor="delivery",
        now=clock.now(),
    )
    sentences = explain(job_events, deliveries=[list(delivery.collect_events())])
    texts = [s.text for s in sentences]
    assert texts[0] == (
        "Created at 23:59:58 by API key k1 for account acct, board board in the sandbox "
        "(idempotency key order-7)."
    )
    assert "Attempt 1 published the pin at 00:00:01: Pinterest id pin-9." in texts
    assert texts[-3:] == [
        f"The job.published webhook was queued at 00:00:01 for endpoint {delivery.endpoint_id}.",
        "Webhook attempt 1 for job.published failed at 00:00:02 (the endpoint answered 500); "
        "retried in 5.0 s.",
        "The job.published webhook was delivered at 00:00:07 (the endpoint answered 204 in 8 ms).",
    ]
    text = render(sentences)
    assert text.splitlines()[0] == "2026-11-23 (UTC)"
    assert "2026-11-24 (UTC)" in text.splitlines()


def test_held_retried_and_dead_lettered_deliveries() -> None:
    clock = ManualClock(datetime(2026, 11, 23, 9, 0, 0, tzinfo=UTC))
    delivery = Delivery.create(
        delivery_id=uuid4(), tenant_id="t", endpoint_id=uuid4(), event_type="job.failed",
        payload="{}", hold_reason="endpoint_disabled", actor="system", now=clock.now(),
    )  # fmt: skip
    clock.advance(60)
    delivery.request_retry(reason="recover", actor="key:k", now=clock.now())
    clock.advance(1)
    delivery.record_attempt(
        attempt=1, succeeded=False, receipt={"error": "connection refused"},
        next_attempt_at=None, actor="delivery", now=clock.now(),
    )  # fmt: skip
    clock.advance(1)
    delivery.request_retry(reason="manual", actor="key:k", now=clock.now())
    clock.advance(1)
    delivery.hold(reason="endpoint_deleted", actor="delivery", now=clock.now())
    texts = [s.text for s in explain([], deliveries=[list(delivery.collect_events())])]
    assert texts == [
        "The job.failed webhook was held at 09:00:00: the endpoint is disabled.",
        "The job.failed webhook was sent again at 09:01:00 on request (recover).",
        "Webhook attempt 1 for job.failed failed at 09:01:01 (connection refused); "
        "no retries left, so it was dead-lettered.",
        "The job.failed webhook was sent again at 09:01:02 on request (manual).",
        "The job.failed webhook was held at 09:01:03 (endpoint deleted).",
    ]
