"""The ledger's contract, run against SQLite and PostgreSQL alike (the `database_url` fixture)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from jobledger.bootstrap import build
from jobledger.settings import Settings
from ledger.application import JobLedger
from ledger.clock import ManualClock
from ledger.errors import ConcurrentUpdate, IdempotencyConflict, InvalidTransition, JobNotFound
from ledger.job import AttemptFailure, Job, JobState, job_id_for
from ledger.timeline import timeline_entry
from tests.conftest import make_new_job

WORKER = "worker:w1"


def events_in_log(ledger: JobLedger) -> int:
    return len(ledger.recorder.select_notifications(0, 100_000, inclusive_of_start=False))


def run_to_failure(ledger: JobLedger, job_id, clock: ManualClock) -> None:
    ledger.schedule(job_id)
    attempt = ledger.start_attempt(job_id, worker_id=WORKER, lease_seconds=30).job.attempts
    ledger.record_failure(
        job_id,
        attempt=attempt,
        failure=AttemptFailure("timeout", "no answer in 10 s", retryable=True, ambiguous=True),
        actor=WORKER,
    )


def test_create_is_durable_and_visible_to_a_new_process(ledger, database_url, clock) -> None:
    result = ledger.create_job(
        make_new_job(), tenant_id="tenant-a", idempotency_key="k1", actor="key:k"
    )
    assert result.created and result.positions and result.job.state is JobState.QUEUED
    other = build(Settings(database_url=database_url), clock=clock, run_migrations=False)
    try:
        job = other.ledger.get_job(result.job.id)
    finally:
        other.close()
    assert job.status() == result.job.status()
    assert job.id == job_id_for("tenant-a", "k1")


def test_same_key_same_body_returns_the_existing_job(ledger) -> None:
    first = ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="k", actor="key:a")
    ledger.schedule(first.job.id)
    again = ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="k", actor="key:b")
    assert not again.created
    assert again.job.id == first.job.id
    assert again.job.state is JobState.SCHEDULED  # the job as it is now
    assert events_in_log(ledger) == 2


def test_same_key_different_body_conflicts_and_writes_nothing(ledger) -> None:
    ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="k", actor="key:a")
    before = events_in_log(ledger)
    with pytest.raises(IdempotencyConflict) as conflict:
        ledger.create_job(
            make_new_job(pin={"title": "Another"}),
            tenant_id="t",
            idempotency_key="k",
            actor="key:a",
        )
    assert "'k'" in str(conflict.value)
    assert events_in_log(ledger) == before


def test_same_key_in_another_tenant_is_another_job(ledger) -> None:
    a = ledger.create_job(make_new_job(), tenant_id="a", idempotency_key="k", actor="key:a")
    b = ledger.create_job(make_new_job(), tenant_id="b", idempotency_key="k", actor="key:b")
    assert a.created and b.created and a.job.id != b.job.id


def test_refused_command_writes_nothing(ledger) -> None:
    job_id = ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="k", actor="k").job.id
    before = events_in_log(ledger)
    with pytest.raises(InvalidTransition):
        ledger.requeue(job_id, actor="key:a")
    with pytest.raises(JobNotFound):
        ledger.cancel(job_id_for("t", "missing"), actor="key:a")
    assert events_in_log(ledger) == before
    assert ledger.get_job(job_id).version == 1


def test_replay_from_stored_events_alone_rebuilds_the_job(ledger, clock) -> None:
    job_id = ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="k", actor="k").job.id
    run_to_failure(ledger, job_id, clock)
    clock.advance(3600)
    attempt = ledger.start_attempt(job_id, worker_id=WORKER, lease_seconds=30).job.attempts
    ledger.record_success(
        job_id, attempt=attempt, external_ref="pin-987", receipt={"rid": "r-1"}, actor=WORKER
    )
    stored = ledger.recorder.select_events(job_id)
    rebuilt = None
    for stored_event in stored:
        rebuilt = ledger.mapper.to_domain_event(stored_event).mutate(rebuilt)
    assert isinstance(rebuilt, Job)
    assert rebuilt.status() == ledger.get_job(job_id).status()
    assert rebuilt.state is JobState.PUBLISHED and rebuilt.external_ref == "pin-987"
    assert rebuilt.attempts == 2 and rebuilt.version == 6


def test_timeline_is_oldest_first_with_receipts(ledger, clock) -> None:
    job_id = ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="k", actor="k").job.id
    run_to_failure(ledger, job_id, clock)
    entries = [timeline_entry(e) for e in ledger.job_events(job_id)]
    assert [e["type"] for e in entries] == [
        "JobCreated",
        "JobScheduled",
        "AttemptStarted",
        "AttemptFailed",
    ]
    assert [e["version"] for e in entries] == [1, 2, 3, 4]
    failed = entries[-1]
    assert failed["actor"] == WORKER
    assert failed["data"]["error_code"] == "timeout"
    assert failed["data"]["ambiguous"] is True
    assert failed["data"]["attempt"] == 1
    assert failed["prev_hash"] == entries[-2]["hash"]
    assert len({e["id"] for e in entries}) == 4


def test_as_of_rebuilds_the_job_as_it_was(ledger, clock) -> None:
    job_id = ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="k", actor="k").job.id
    created_at = clock.now()
    clock.advance(60)
    ledger.schedule(job_id)
    clock.advance(60)
    ledger.cancel(job_id, actor="key:a", reason="client asked")
    assert ledger.get_job(job_id, as_of=created_at + timedelta(seconds=30)).state is JobState.QUEUED
    assert ledger.get_job(job_id, as_of=clock.now() - timedelta(seconds=1)).state == "scheduled"
    assert ledger.get_job(job_id, as_of=clock.now()).state is JobState.CANCELED
    with pytest.raises(JobNotFound):
        ledger.get_job(job_id, as_of=created_at - timedelta(seconds=1))


def test_stale_write_is_redecided_on_fresh_state(ledger, database_url, clock) -> None:
    """Another process writes between our load and our save: we retry on its result."""
    job_id = ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="k", actor="k").job.id
    other = build(Settings(database_url=database_url), clock=clock, run_migrations=False)
    calls = []

    def cancel(job: Job) -> None:
        calls.append(str(job.state))
        if len(calls) == 1:
            other.ledger.schedule(job_id)  # lands first; our copy is now stale
        job.cancel(actor="key:a", now=clock.now(), reason="r")

    try:
        written = ledger._update(job_id, cancel)
    finally:
        other.close()
    assert calls == ["queued", "scheduled"]
    assert [type(e).__name__ for e in ledger.job_events(job_id)] == [
        "JobCreated",
        "JobScheduled",
        "JobCanceled",
    ]
    assert written.job.version == 3


def test_stale_write_that_becomes_illegal_is_reported(ledger, database_url, clock) -> None:
    job_id = ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="k", actor="k").job.id
    other = build(Settings(database_url=database_url), clock=clock, run_migrations=False)
    first = True

    def schedule(job: Job) -> None:
        nonlocal first
        if first:
            first = False
            other.ledger.cancel(job_id, actor="key:b")
        job.schedule(now=clock.now())

    try:
        with pytest.raises(InvalidTransition):
            ledger._update(job_id, schedule)
    finally:
        other.close()
    assert ledger.get_job(job_id).state is JobState.CANCELED


def test_an_outcome_is_recorded_on_the_job_the_worker_holds_without_reading_it(
    ledger, clock, monkeypatch
) -> None:
    job_id = ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="k", actor="k").job.id
    ledger.schedule(job_id)
    started = ledger.start_attempts([job_id], worker_id=WORKER, lease_seconds=30)[0].job
    monkeypatch.setattr(ledger, "_find", lambda _: pytest.fail("the job was read again"))
    written = ledger.record_success(
        job_id, attempt=1, external_ref="pin-1", receipt={}, actor=WORKER, loaded=started
    )
    assert written.job is started
    monkeypatch.undo()
    assert ledger.get_job(job_id).state is JobState.PUBLISHED
    assert ledger.get_job(job_id).version == 4


def test_an_outcome_on_a_stale_held_job_is_decided_on_the_stored_one(
    ledger, database_url, clock
) -> None:
    """The lease ran out meanwhile and another process recorded that: the held copy's save is
    refused, and the outcome, decided again on the stored job, is a wrong attempt."""
    job_id = ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="k", actor="k").job.id
    ledger.schedule(job_id)
    started = ledger.start_attempts([job_id], worker_id=WORKER, lease_seconds=30)[0].job
    clock.advance(31)
    other = build(Settings(database_url=database_url), clock=clock, run_migrations=False)
    try:
        other.ledger.expire_lease(job_id)
    finally:
        other.close()
    with pytest.raises(InvalidTransition):
        ledger.record_success(
            job_id, attempt=1, external_ref="pin-1", receipt={}, actor=WORKER, loaded=started
        )
    assert [type(e).__name__ for e in ledger.job_events(job_id)][-1] == "AttemptFailed"
    assert ledger.get_job(job_id).state is JobState.FAILED_RETRYING


def test_a_job_that_never_settles_is_reported_not_lost(ledger, database_url, clock) -> None:
    job_id = ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="k", actor="k").job.id
    other = build(Settings(database_url=database_url), clock=clock, run_migrations=False)

    def raced(job: Job) -> None:
        job._record(job.JobScheduled, when=clock.now(), actor="x", run_at=clock.now(), lane="a")

    def always_raced(job: Job) -> None:
        other.ledger._update(job_id, raced)  # lands first, every time
        job.cancel(actor="key:a", now=clock.now())

    try:
        with pytest.raises(ConcurrentUpdate):
            ledger._update(job_id, always_raced)
    finally:
        other.close()
    assert ledger.get_job(job_id).state is JobState.SCHEDULED  # the cancel was not half-written


def test_threads_racing_one_command_give_one_event(ledger) -> None:
    job_id = ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="k", actor="k").job.id
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def schedule() -> None:
        barrier.wait()
        try:
            ledger.schedule(job_id)
            outcomes.append("ok")
        except InvalidTransition:
            outcomes.append("refused")

    threads = [threading.Thread(target=schedule) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok"] + ["refused"] * 7
    assert [type(e).__name__ for e in ledger.job_events(job_id)] == ["JobCreated", "JobScheduled"]


def test_schedule_many_is_one_transaction_and_skips_what_cannot_be_scheduled(ledger) -> None:
    ids = [
        ledger.create_job(make_new_job(), tenant_id="t", idempotency_key=f"k{i}", actor="k").job.id
        for i in range(5)
    ]
    ledger.cancel(ids[1], actor="key:a")
    batches = ledger.group_commit.batches
    written = ledger.schedule_many([*ids, job_id_for("t", "never-created")], actor="scheduler")
    assert ledger.group_commit.batches == batches + 1  # one store transaction for the batch
    assert [w.job.id for w in written] == [ids[0], *ids[2:]]
    positions = [p for w in written for p in w.positions]
    assert len(positions) == 4
    assert positions == sorted(positions)
    for job_id in ids:
        expected = JobState.CANCELED if job_id == ids[1] else JobState.SCHEDULED
        assert ledger.get_job(job_id).state == expected
    assert ledger.schedule_many([ids[0]]) == []  # already scheduled: nothing written


def test_schedule_many_falls_back_to_one_by_one_when_a_job_changed_meanwhile(
    ledger, database_url, clock
) -> None:
    ids = [
        ledger.create_job(make_new_job(), tenant_id="t", idempotency_key=f"k{i}", actor="k").job.id
        for i in range(3)
    ]
    other = build(Settings(database_url=database_url), clock=clock, run_migrations=False)
    load_many = ledger._load_many
    raced: list[str] = []

    def load_then_race(job_ids, kind):
        jobs = load_many(job_ids, kind)
        if not raced:
            raced.append("canceled")
            other.ledger.cancel(ids[1], actor="key:other")  # lands first: our copy is stale
        return jobs

    ledger._load_many = load_then_race
    try:
        written = ledger.schedule_many(ids, actor="scheduler")
    finally:
        del ledger._load_many
        other.close()
    assert raced == ["canceled"]
    assert [w.job.id for w in written] == [ids[0], ids[2]]
    assert [ledger.get_job(i).state for i in ids] == [
        JobState.SCHEDULED,
        JobState.CANCELED,
        JobState.SCHEDULED,
    ]
    # the refused batch wrote nothing: each job has exactly the events of what happened to it
    assert [type(e).__name__ for e in ledger.job_events(ids[1])] == ["JobCreated", "JobCanceled"]
    assert [type(e).__name__ for e in ledger.job_events(ids[0])] == ["JobCreated", "JobScheduled"]


def test_start_attempts_starts_the_due_jobs_in_one_transaction(ledger, clock) -> None:
    ids = [
        ledger.create_job(make_new_job(), tenant_id="t", idempotency_key=f"k{i}", actor="k").job.id
        for i in range(4)
    ]
    later = make_new_job(publish_at=clock.now() + timedelta(hours=1))
    not_due = ledger.create_job(later, tenant_id="t", idempotency_key="later", actor="k").job.id
    ledger.schedule_many([*ids[:3], not_due])  # ids[3] stays queued
    batches = ledger.group_commit.batches
    written = ledger.start_attempts([*ids, not_due], worker_id=WORKER, lease_seconds=30)
    assert ledger.group_commit.batches == batches + 1
    assert [w.job.id for w in written] == ids[:3]
    assert all(w.job.state == JobState.RUNNING and w.job.attempts == 1 for w in written)
    assert ledger.get_job(ids[3]).state == JobState.QUEUED
    assert ledger.get_job(not_due).state == JobState.SCHEDULED
    # a second worker's batch finds them running: nothing is started twice
    assert ledger.start_attempts(ids[:3], worker_id="worker:w2", lease_seconds=30) == []


def test_aggregates_read_together_are_those_read_one_by_one(ledger, clock) -> None:
    """`aggregates_at` (one read of the store for many aggregates) against the library's
    one-aggregate read: latest versions, a version in the past, an unknown id left out."""
    from uuid import uuid4

    ids = [
        ledger.create_job(make_new_job(), tenant_id="t", idempotency_key=k, actor="key:a").job.id
        for k in ("a", "b", "c")
    ]
    run_to_failure(ledger, ids[0], clock)
    ledger.cancel(ids[1], actor="key:a")
    unknown = uuid4()
    found = ledger.aggregates_at({ids[0]: None, ids[1]: 1, ids[2]: None, unknown: None})
    assert set(found) == set(ids)
    assert found[ids[0]].version == 4 and found[ids[0]].status() == ledger.get_job(ids[0]).status()
    past = ledger.repository.get(ids[1], version=1)
    assert found[ids[1]].version == 1 and found[ids[1]].status() == past.status()
    assert found[ids[1]].state is JobState.QUEUED  # not its latest: canceled
    assert found[ids[2]].status() == ledger.get_job(ids[2]).status()
    assert ledger.get_deliveries([ids[0], unknown]) == {}  # jobs are not deliveries


def test_one_save_of_many_aggregates_gives_each_event_its_own_position(ledger) -> None:
    """The recorder's insert (on PostgreSQL four plain arrays, not the library's composite
    array): every event stored as saved, and each aggregate told the log positions that hold
    its own events; a key used before refuses the whole save."""
    jobs = [
        ledger.new_job(make_new_job(), tenant_id="t", idempotency_key=f"k{i}", actor="key:a")
        for i in range(5)
    ]
    head = ledger.recorder.max_notification_id() or 0
    created = ledger.create_jobs(jobs)
    notes = ledger.recorder.select_notifications(head, 100, inclusive_of_start=False)
    assert len(notes) == 5 and [n.id for n in notes] == sorted(n.id for n in notes)
    by_position = {n.id: n for n in notes}
    for job, result in zip(jobs, created, strict=True):
        (position,) = result.positions
        note = by_position[position]
        assert (note.originator_id, note.originator_version) == (job.id, 1)
        assert ledger.mapper.to_domain_event(note).originator_id == job.id
        assert ledger.get_job(job.id).status() == result.job.status()
    again = ledger.new_job(make_new_job(), tenant_id="t", idempotency_key="k0", actor="key:a")
    fresh = ledger.new_job(make_new_job(), tenant_id="t", idempotency_key="new", actor="key:a")
    replay, made = ledger.create_jobs([again, fresh])
    assert not replay.created and made.created  # refused as one save, then saved one by one
    assert events_in_log(ledger) == 6
