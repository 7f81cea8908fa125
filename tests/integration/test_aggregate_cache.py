"""`AggregateCache` on both stores: it keeps only aggregates still in motion, and an aggregate
it dropped is rebuilt from the log, exactly, when it moves again."""

from __future__ import annotations

import orjson

from projections.aggregate_cache import AggregateCache
from projections.job_status import JobStatusProjection, get_doc
from projections.runner import ProjectionRunner
from storage.sql import SqlStore
from tests.conftest import make_new_job


def _log(ledger, after: int = 0):
    return [
        ledger.mapper.to_domain_event(n)
        for n in ledger.recorder.select_notifications(after, 10_000, inclusive_of_start=False)
    ]


def test_settled_aggregates_are_dropped_after_their_batch_and_rebuilt_when_they_move(ledger):
    def new(key: str):
        return ledger.create_job(
            make_new_job(), tenant_id="t", idempotency_key=key, actor="key:a"
        ).job.id

    canceled, running = new("a"), new("b")
    ledger.cancel(canceled, actor="key:a")
    ledger.schedule(running)
    ledger.start_attempt(running, worker_id="w", lease_seconds=30)
    cache = AggregateCache(ledger, settled=lambda job: job.is_final)
    batch = _log(ledger)

    cache.preload(batch)
    after = {event.originator_id: cache.apply(event) for event in batch}
    assert after[canceled].is_final and len(cache) == 2  # kept until the batch is done

    cache.preload([])  # the next batch starts
    assert len(cache) == 1
    # the running job is still there, at its latest version
    assert cache._items[running].version == ledger.get_job(running).version

    position = ledger.recorder.max_notification_id()
    ledger.requeue(canceled, actor="key:a", reason="try again")
    (requeued,) = _log(ledger, position)
    cache.preload([requeued])
    job = cache.apply(requeued)
    assert (job.state, job.version) == (ledger.get_job(canceled).state, 3)
    assert job.status() == ledger.get_job(canceled).status()


def test_the_job_status_rows_stay_exact_while_finished_jobs_leave_the_cache(ledger, service):
    store = SqlStore(service.database)
    projection = JobStatusProjection(ledger)
    runner = ProjectionRunner(ledger, store, projection, batch_size=3)
    runner.setup()
    try:
        ids = [
            ledger.create_job(
                make_new_job(), tenant_id="t", idempotency_key=f"k{i}", actor="key:a"
            ).job.id
            for i in range(6)
        ]
        for job_id in ids[:4]:
            ledger.cancel(job_id, actor="key:a")
        runner.catch_up()
        ledger.requeue(ids[0], actor="key:a")
        ledger.cancel(ids[5], actor="key:a")
        runner.catch_up()
        assert set(projection._cache._items) == {ids[0], ids[4], ids[5]}  # 5: its batch's
        later = ledger.create_job(
            make_new_job(), tenant_id="t", idempotency_key="later", actor="key:a"
        ).job.id
        runner.catch_up()
        assert set(projection._cache._items) == {ids[0], ids[4], later}

        for job_id in ids:
            with store.transaction() as tx:
                doc = get_doc(tx, None, job_id)
            assert orjson.loads(doc) == ledger.get_job(job_id).status()
    finally:
        store.close()


def test_a_batch_preloads_every_aggregate_it_misses_in_one_read(ledger, monkeypatch):
    def new(key: str):
        return ledger.create_job(
            make_new_job(), tenant_id="t", idempotency_key=key, actor="key:a"
        ).job.id

    jobs = [new(f"k{i}") for i in range(3)]
    for job_id in jobs:
        ledger.schedule(job_id)
    position = ledger.recorder.max_notification_id()
    for job_id in jobs:
        ledger.cancel(job_id, actor="key:a")
    reads: list[list] = []
    select_events_of = ledger.recorder.select_events_of

    def counted(ids):
        reads.append(sorted(ids))
        return select_events_of(ids)

    monkeypatch.setattr(ledger.recorder, "select_events_of", counted)
    cache = AggregateCache(ledger, settled=lambda job: job.is_final)
    batch = _log(ledger, position)
    cache.preload(batch)
    assert reads == [sorted(jobs)]
    # each as it was just before the batch's event, not as it is now (canceled)
    assert {cache._items[j].version for j in jobs} == {2}
    assert all(cache._items[j].state == "scheduled" for j in jobs)
    applied = [cache.apply(event) for event in batch]
    assert len(reads) == 1  # apply found every one of them
    assert [job.status() for job in applied] == [ledger.get_job(j).status() for j in jobs]
