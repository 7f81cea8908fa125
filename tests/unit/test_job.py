"""Given events, when a command, then events: the Job aggregate's documented rules one by one."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from ledger.clock import ManualClock
from ledger.errors import InvalidTransition, LeaseNotExpired, NotDue, WrongAttempt
from ledger.job import AttemptFailure, Job, JobState, job_id_for
from ledger.retry import RetryPolicy
from tests.conftest import make_new_job

POLICY = RetryPolicy(max_attempts=3, base_seconds=10.0, cap_seconds=60.0)


def created(clock: ManualClock, **overrides) -> Job:
    new = make_new_job(**overrides)
    job = Job.create(
        tenant_id="tenant-a",
        idempotency_key="key-1",
        request_fingerprint=new.fingerprint(),
        account_id=new.account_id,
        board_id=new.board_id,
        pin=new.pin.as_dict(),
        publish_at=new.publish_at,
        mode=new.mode,
        simulate=new.simulate,
        metadata=new.metadata,
        actor="key:k1",
        now=clock.now(),
    )
    job.collect_events()
    return job


def running(clock: ManualClock) -> Job:
    job = created(clock)
    job.schedule(now=clock.now())
    job.start_attempt(worker_id="worker:w1", lease_seconds=30, now=clock.now())
    job.collect_events()
    return job


def only_event(job: Job):
    events = job.collect_events()
    assert len(events) == 1
    return events[0]


def test_job_id_derives_from_tenant_and_key_only() -> None:
    assert job_id_for("a", "k") == job_id_for("a", "k")
    assert job_id_for("a", "k") != job_id_for("b", "k")
    # the tenant/key boundary is unambiguous
    assert job_id_for("a:b", "c") != job_id_for("a", "b:c")


def test_created_event_carries_the_request_and_actor() -> None:
    clock = ManualClock()
    new = make_new_job(simulate=["timeout", "published"], metadata={"campaign": "x"})
    job = Job.create(
        tenant_id="t",
        idempotency_key="k",
        request_fingerprint=new.fingerprint(),
        account_id=new.account_id,
        board_id=new.board_id,
        pin=new.pin.as_dict(),
        publish_at=None,
        mode="sandbox",
        simulate=new.simulate,
        metadata=new.metadata,
        actor="key:k1",
        now=clock.now(),
    )
    event = only_event(job)
    assert type(event).__name__ == "JobCreated"
    assert (event.actor, event.occurred_at, event.version) == ("key:k1", clock.now(), 1)
    assert event.simulate == ["timeout", "published"]
    assert event.pin["title"] == "A cat"
    assert job.state is JobState.QUEUED


def test_schedule_runs_at_publish_at_when_it_is_later() -> None:
    clock = ManualClock()
    later = clock.now() + timedelta(hours=2)
    job = created(clock, publish_at=later)
    job.schedule(now=clock.now())
    event = only_event(job)
    assert (event.run_at, event.lane) == (later, "acct-1")
    assert job.next_run_at == later
    with pytest.raises(NotDue):
        job.start_attempt(worker_id="worker:w1", lease_seconds=30, now=clock.now())
    assert job.collect_events() == []


def test_schedule_runs_now_when_publish_at_is_past() -> None:
    clock = ManualClock()
    job = created(clock, publish_at=clock.now() - timedelta(days=1))
    job.schedule(now=clock.now())
    assert only_event(job).run_at == clock.now()


def test_retryable_failure_records_delay_and_next_run() -> None:
    clock = ManualClock()
    job = running(clock)
    job.record_failure(
        attempt=1,
        failure=AttemptFailure("rate_limited", "429 from upstream", retryable=True),
        policy=POLICY,
        actor="worker:w1",
        now=clock.now(),
        rng=random.Random(1),
    )
    event = only_event(job)
    assert type(event).__name__ == "AttemptFailed"
    assert 0 <= event.delay_seconds <= 10.0
    assert event.next_run_at == clock.now() + timedelta(seconds=event.delay_seconds)
    assert job.last_error == {
        "code": "rate_limited",
        "message": "429 from upstream",
        "retryable": True,
        "ambiguous": False,
        "attempt": 1,
    }


def test_retry_after_is_a_floor_for_the_delay() -> None:
    clock = ManualClock()
    job = running(clock)
    job.record_failure(
        attempt=1,
        failure=AttemptFailure("rate_limited", "slow down", retryable=True, retry_after=45.0),
        policy=POLICY,
        actor="worker:w1",
        now=clock.now(),
        rng=random.Random(1),
    )
    assert only_event(job).delay_seconds == 45.0


def test_non_retryable_failure_is_terminal_at_once() -> None:
    clock = ManualClock()
    job = running(clock)
    state = job.record_failure(
        attempt=1,
        failure=AttemptFailure("invalid_media", "image too small", retryable=False),
        policy=POLICY,
        actor="worker:w1",
        now=clock.now(),
    )
    event = only_event(job)
    assert state is JobState.FAILED_TERMINAL
    assert (type(event).__name__, event.reason, event.retryable) == (
        "JobFailedTerminally",
        "non_retryable",
        False,
    )


def test_attempts_exhausted_after_max_attempts() -> None:
    clock = ManualClock()
    job = created(clock)
    job.schedule(now=clock.now())
    states = []
    for attempt in range(1, POLICY.max_attempts + 1):
        clock.advance(3600)
        assert job.start_attempt(worker_id="worker:w", lease_seconds=30, now=clock.now()) == attempt
        states.append(
            job.record_failure(
                attempt=attempt,
                failure=AttemptFailure("server_error", "502", retryable=True),
                policy=POLICY,
                actor="worker:w",
                now=clock.now(),
            )
        )
    assert states == [JobState.FAILED_RETRYING, JobState.FAILED_RETRYING, JobState.FAILED_TERMINAL]
    assert job.collect_events()[-1].reason == "attempts_exhausted"


def test_report_for_a_closed_attempt_is_refused() -> None:
    clock = ManualClock()
    job = running(clock)
    clock.advance(31)
    job.expire_lease(policy=POLICY, now=clock.now())
    clock.advance(3600)
    job.start_attempt(worker_id="worker:w2", lease_seconds=30, now=clock.now())
    job.collect_events()
    with pytest.raises(WrongAttempt):
        job.record_success(
            attempt=1, external_ref="late", receipt={}, actor="worker:w1", now=clock.now()
        )
    assert job.collect_events() == []
    assert job.external_ref is None


def test_lease_expiry_is_an_ambiguous_worker_lost_failure() -> None:
    clock = ManualClock()
    job = running(clock)
    with pytest.raises(LeaseNotExpired):
        job.expire_lease(policy=POLICY, now=clock.now() + timedelta(seconds=29))
    clock.advance(30)
    assert job.expire_lease(policy=POLICY, now=clock.now()) is JobState.FAILED_RETRYING
    event = only_event(job)
    assert (event.error_code, event.ambiguous, event.retryable, event.actor) == (
        "worker_lost",
        True,
        True,
        "system",
    )
    assert event.receipt == {"worker_id": "worker:w1"}


def test_cancel_while_running_is_refused_with_the_states_named() -> None:
    clock = ManualClock()
    job = running(clock)
    with pytest.raises(InvalidTransition) as refused:
        job.cancel(actor="key:k1", now=clock.now())
    assert "running" in str(refused.value)
    assert "queued, scheduled, failed_retrying" in str(refused.value)
    assert refused.value.state == "running"
    assert job.collect_events() == []


def test_requeue_continues_attempt_numbering_with_a_fresh_budget() -> None:
    clock = ManualClock()
    job = running(clock)
    job.record_failure(
        attempt=1,
        failure=AttemptFailure("unauthorized", "401", retryable=False),
        policy=POLICY,
        actor="worker:w1",
        now=clock.now(),
    )
    with pytest.raises(InvalidTransition):
        job.requeue(actor="system", now=clock.now(), reason="automatic")
    job.requeue(actor="key:support", now=clock.now(), reason="token refreshed")
    job.schedule(now=clock.now())
    assert job.start_attempt(worker_id="worker:w1", lease_seconds=30, now=clock.now()) == 2
    events = job.collect_events()
    assert [type(e).__name__ for e in events][-3:] == [
        "JobRequeued",
        "JobScheduled",
        "AttemptStarted",
    ]
    assert events[-3].reason == "token refreshed"
    assert job.cycle_attempts == 1


def test_state_entered_at_moves_only_on_a_state_change() -> None:
    clock = ManualClock()
    job = created(clock)
    clock.advance(5)
    job.schedule(now=clock.now())
    assert job.state_entered_at == clock.now()
    assert job.created_at == clock.now() - timedelta(seconds=5)
