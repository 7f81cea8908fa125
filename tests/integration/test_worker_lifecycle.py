"""The worker end to end on both stores, one pass at a time under a ManualClock: the full job
lifecycle through the sandbox publisher, leases, pacing, shutdown."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from ledger.errors import InvalidTransition, StoreUnavailable
from ledger.job import Job
from ledger.retry import RetryPolicy
from tests.integration.worker_harness import LEASE, Harness
from worker.pacing import BucketSpec, Pacer
from worker.publishers import Outcome, Published


@pytest.fixture
def harness(ledger, store, clock) -> Harness:
    ledger.retry_policy = RetryPolicy(max_attempts=5, base_seconds=30, cap_seconds=3600)
    return Harness(ledger, store, clock)


def test_retry_then_publish(harness) -> None:
    job_id = harness.create("k1", simulate=["server_error", "rate_limited", "published"])
    job = harness.until_final(job_id)
    assert job.state == "published"
    assert job.attempts == 3
    assert job.external_ref == f"sandbox-{str(job_id)[:8]}-3"
    assert harness.types(job_id) == [
        "JobCreated",
        "JobScheduled",
        "AttemptStarted",
        "AttemptFailed",
        "AttemptStarted",
        "AttemptFailed",
        "AttemptStarted",
        "JobPublished",
    ]
    events = harness.ledger.job_events(job_id)
    failed = [e for e in events if type(e).__name__ == "AttemptFailed"]
    assert [e.error_code for e in failed] == ["server_error", "rate_limited"]
    for e in failed:  # the delay chosen is recorded, and next_run_at follows from it
        assert e.next_run_at == e.timestamp + timedelta(seconds=e.delay_seconds)
        assert e.retryable is True
    started = [e for e in events if type(e).__name__ == "AttemptStarted"]
    assert [e.attempt for e in started] == [1, 2, 3]
    assert all(e.worker_id == "worker:test" for e in started)
    assert all(e.lease_expires_at == e.timestamp + timedelta(seconds=LEASE) for e in started)
    assert events[-1].receipt["simulated"] == "published"
    assert harness.row(job_id)["state"] == "published"  # the projection agrees


def test_terminal_on_invalid_media(harness) -> None:
    job_id = harness.create("k1", simulate=["invalid_media", "published"])
    job = harness.until_final(job_id)
    assert job.state == "failed_terminal"
    assert job.attempts == 1
    last = harness.ledger.job_events(job_id)[-1]
    assert type(last).__name__ == "JobFailedTerminally"
    assert (last.error_code, last.reason, last.retryable) == (
        "invalid_media",
        "non_retryable",
        False,
    )
    assert last.receipt["pinterest_code"] == 235


def test_exhausted_attempts(harness) -> None:
    harness.ledger.retry_policy = RetryPolicy(max_attempts=3, base_seconds=0.25, cap_seconds=1.5)
    job_id = harness.create("k1", simulate=["server_error"])
    job = harness.until_final(job_id, seconds=2.0)
    assert job.state == "failed_terminal"
    assert job.attempts == 3
    last = harness.ledger.job_events(job_id)[-1]
    assert (last.error_code, last.reason) == ("server_error", "attempts_exhausted")
    delays = [
        e.delay_seconds
        for e in harness.ledger.job_events(job_id)
        if type(e).__name__ == "AttemptFailed"
    ]
    assert len(delays) == 2
    assert 0 <= delays[0] <= 0.25 and 0 <= delays[1] <= 0.5  # full jitter, fractions allowed


def test_cancel_while_scheduled_is_never_attempted(harness) -> None:
    future = harness.clock.now() + timedelta(hours=1)
    job_id = harness.create("k1", publish_at=future)
    harness.step()
    job = harness.ledger.get_job(job_id)
    assert job.state == "scheduled"
    assert job.next_run_at == future  # run_at = max(now, publish_at)
    harness.ledger.cancel(job_id, actor="key:human", reason="changed my mind")
    harness.clock.advance(7200)
    harness.step()
    assert harness.ledger.get_job(job_id).state == "canceled"
    assert "AttemptStarted" not in harness.types(job_id)


def test_cancel_while_running_is_refused(ledger, store, clock) -> None:
    refusals: list[InvalidTransition] = []

    class CancelDuringPublish:
        def publish(self, job: Job, attempt: int) -> Outcome:
            try:
                ledger.cancel(job.id, actor="key:human")
            except InvalidTransition as error:
                refusals.append(error)
            return Published("pin-1", {})

        def reconcile(self, job, since):
            return None

        def close(self) -> None:
            pass

    h = Harness(ledger, store, clock, publishers={"sandbox": CancelDuringPublish()})
    job_id = h.create("k1")
    job = h.until_final(job_id)
    assert job.state == "published"
    assert len(refusals) == 1
    assert refusals[0].state == "running"
    assert "JobCanceled" not in h.types(job_id)


def test_requeue_after_terminal_continues_attempt_numbers(harness) -> None:
    job_id = harness.create("k1", simulate=["unauthorized", "published"])
    assert harness.until_final(job_id).state == "failed_terminal"
    harness.ledger.requeue(job_id, actor="key:support", reason="token fixed")
    job = harness.until_final(job_id)
    assert job.state == "published"
    assert job.attempts == 2
    assert harness.types(job_id)[-5:] == [
        "JobFailedTerminally",
        "JobRequeued",
        "JobScheduled",
        "AttemptStarted",
        "JobPublished",
    ]


def test_expired_lease_is_worker_lost_then_retried(harness) -> None:
    job_id = harness.create("k1")
    harness.ledger.schedule(job_id)
    # a worker that starts the attempt and dies
    harness.ledger.start_attempt(job_id, worker_id="worker:dead", lease_seconds=LEASE)
    harness.step()
    assert harness.ledger.get_job(job_id).state == "running"  # lease not expired: left alone
    harness.clock.advance(LEASE + 1)
    harness.step()
    job = harness.ledger.get_job(job_id)
    assert job.state == "failed_retrying"
    assert job.last_error["code"] == "worker_lost"
    assert job.last_error["ambiguous"] is True
    job = harness.until_final(job_id)
    assert job.state == "published"
    assert job.attempts == 2


def test_future_publish_at_waits(harness) -> None:
    later = harness.clock.now() + timedelta(minutes=5)
    job_id = harness.create("k1", publish_at=later)
    harness.step()
    harness.clock.advance(299)
    harness.step()
    assert harness.ledger.get_job(job_id).state == "scheduled"
    harness.clock.advance(1)
    harness.step()
    assert harness.ledger.get_job(job_id).state == "published"


def test_pacing_holds_jobs_back_with_their_next_run_visible(ledger, store, clock) -> None:
    pacer = Pacer(store, account=BucketSpec(2, 1.0), global_=BucketSpec(200, 3.0))
    h = Harness(ledger, store, clock, pacer=pacer, concurrency=10)
    now = clock.now()
    burst = [h.create(f"a{i}", account_id="acct-busy") for i in range(4)]
    other = h.create("b0", account_id="acct-quiet")
    h.step()  # schedules
    h.step()  # claims: 2 tokens for the busy account, the quiet one is not held back
    states = [ledger.get_job(j).state for j in burst]
    assert states.count("published") == 2
    assert ledger.get_job(other).state == "published"
    paced = [j for j in burst if ledger.get_job(j).state == "scheduled"]
    assert len(paced) == 2
    runs = sorted(ledger.get_job(j).next_run_at for j in paced)
    assert runs == [now + timedelta(seconds=1), now + timedelta(seconds=2)]
    for j in paced:
        assert "JobPaced" in h.types(j)
        row = h.row(j)  # visible in the status read model
        assert row["state"] == "scheduled"
        assert row["next_run_at"] == ledger.get_job(j).status()["next_run_at"]
    h.step()  # nothing is due: nothing changes, nobody is paced twice
    assert [h.types(j).count("JobPaced") for j in paced] == [1, 1]
    clock.advance(1)
    h.step()
    clock.advance(1)
    h.step()
    assert all(ledger.get_job(j).state == "published" for j in burst)
    assert all(h.types(j).count("JobPaced") <= 1 for j in burst)


def test_pacer_reservations_are_shared_and_released(store, service, clock) -> None:
    h_store = store
    with h_store.transaction() as tx:
        Pacer.create_tables(tx)
    pacer = Pacer(h_store, account=BucketSpec(1, 0.5), global_=BucketSpec(1, 4.0))
    other = Pacer(h_store, account=BucketSpec(1, 0.5), global_=BucketSpec(1, 4.0))
    now = clock.now()
    assert pacer.acquire("j1", "a", now).go
    second = other.acquire("j2", "a", now)  # another process sees the same bucket
    assert (second.wait_seconds, second.bucket) == (2.0, "account:a")
    assert other.acquire("j2", "a", now + timedelta(seconds=1)).wait_seconds == 1.0
    # at its time the job uses the account token it reserved; the global bucket has refilled
    assert pacer.acquire("j2", "a", now + timedelta(seconds=2)).go
    third = pacer.acquire("j3", "b", now + timedelta(seconds=2))
    assert third.bucket == "global"  # account b is fresh, the global bucket was just used
    assert third.wait_seconds == pytest.approx(0.25)
    with h_store.transaction() as tx:
        left = tx.execute(
            "SELECT job_id, bucket FROM pacing_reservations ORDER BY bucket"
        ).fetchall()
    assert [tuple(r) for r in left] == [("j3", "account:b"), ("j3", "global")]
    assert pacer.acquire("j3", "b", now + timedelta(seconds=2.25)).go


def test_drain_releases_attempts_that_do_not_finish(ledger, store, clock) -> None:
    release = threading.Event()

    class Stuck:
        def publish(self, job, attempt):
            release.wait(10)
            return Published("pin-late", {})

        def reconcile(self, job, since):
            return None

        def close(self) -> None:
            pass

    h = Harness(ledger, store, clock, publishers={"sandbox": Stuck()})
    h.worker.threaded = True
    job_id = h.create("k1")
    h.step()
    h.step()
    assert ledger.get_job(job_id).state == "running"
    assert h.worker.drain(0.1) == 1
    release.set()
    for _ in range(200):  # the late thread's report is refused (its attempt was released)
        if h.worker.inflight() == 0:
            break
        threading.Event().wait(0.05)
    assert h.worker.inflight() == 0
    job = ledger.get_job(job_id)
    assert job.state == "failed_retrying"
    assert (job.last_error["code"], job.last_error["ambiguous"]) == ("worker_stopped", True)
    assert h.worker.claim() == 0  # a draining worker claims nothing


def test_a_pass_cut_short_by_the_store_leaves_its_jobs_to_the_next(
    ledger, store, clock, monkeypatch
) -> None:
    """The store fails after a batch was chosen and its tokens taken, while starting the
    attempts: nothing was started, so the next pass must still start both jobs (not remember
    them as already acted on)."""
    harness = Harness(ledger, store, clock)
    jobs = [harness.create(f"k{i}") for i in range(2)]
    harness.step()  # schedules both (the scheduler runs before the claim)
    start_attempts = ledger.start_attempts

    def store_gone(*args, **kwargs):
        monkeypatch.setattr(ledger, "start_attempts", start_attempts)
        raise StoreUnavailable()

    monkeypatch.setattr(ledger, "start_attempts", store_gone)
    with pytest.raises(StoreUnavailable):
        harness.step()
    assert [ledger.get_job(j).state for j in jobs] == ["scheduled", "scheduled"]
    harness.step()
    assert [ledger.get_job(j).attempts for j in jobs] == [1, 1]
