"""The job-status projection on both stores: equal to a from-scratch rebuild after a random
workload, equal to the aggregates, exactly-once under competing runners and kill -9."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from ledger.application import JobLedger
from ledger.clock import ManualClock
from ledger.endpoint import EndpointSettings
from ledger.errors import LedgerError
from ledger.job import AttemptFailure
from projections.job_status import (
    JobFilters,
    JobStatusProjection,
    get_doc,
    job_counts,
    list_docs,
)
from projections.runner import LostOwnership, ProjectionRunner, rebuild
from storage.sql import SqlStore
from tests.conftest import make_new_job

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def runner(ledger, store) -> ProjectionRunner:
    r = ProjectionRunner(ledger, store, JobStatusProjection(ledger), batch_size=7)
    r.setup()
    return r


def random_workload(ledger: JobLedger, clock: ManualClock, seed: int, jobs: int = 25) -> list:
    """Create jobs across tenants and push them through random legal and illegal commands."""
    rng = random.Random(seed)
    ids = []
    for i in range(jobs):
        tenant = rng.choice(["t1", "t2"])
        new = make_new_job(account_id=rng.choice(["a1", "a2", "a3"]), board_id=f"b{i % 4}")
        key = f"s{seed}-k{i}"
        ids.append(
            ledger.create_job(new, tenant_id=tenant, idempotency_key=key, actor="key:x").job.id
        )
        clock.advance(rng.random())
    for _ in range(jobs * 6):
        job_id = rng.choice(ids)
        clock.advance(rng.choice([0.1, 5, 120, 4000]))
        step = rng.choice(["schedule", "start", "ok", "fail", "fatal", "cancel", "requeue", "lost"])
        try:
            job = ledger.get_job(job_id)
            if step == "schedule":
                ledger.schedule(job_id)
            elif step == "start":
                ledger.start_attempt(job_id, worker_id="worker:w", lease_seconds=30)
            elif step == "ok":
                ledger.record_success(
                    job_id,
                    attempt=job.attempts,
                    external_ref=f"pin-{rng.randint(1, 99)}",
                    receipt={},
                    actor="worker:w",
                )
            elif step in ("fail", "fatal"):
                failure = AttemptFailure(step, "boom", retryable=step == "fail")
                ledger.record_failure(
                    job_id, attempt=job.attempts, failure=failure, actor="worker:w"
                )
            elif step == "cancel":
                ledger.cancel(job_id, actor="key:x")
            elif step == "requeue":
                ledger.requeue(job_id, actor="key:x", reason="again")
            else:
                ledger.expire_lease(job_id)
        except LedgerError:
            pass
    return ids


def rows(store: SqlStore, table: str = "job_status") -> list[tuple]:
    with store.transaction() as tx:
        return sorted(tuple(r) for r in tx.execute(f"SELECT * FROM {table}").fetchall())


def test_live_projection_equals_rebuild_and_aggregates(ledger, store, runner, clock) -> None:
    ids = random_workload(ledger, clock, seed=11)
    # follow the log in several catch-ups interleaved with more writes
    runner.catch_up()
    random_workload(ledger, clock, seed=12, jobs=10)
    runner.catch_up()
    live = rows(store)
    assert len(live) == 35
    assert runner.position() == ledger.recorder.max_notification_id()

    for job_id in ids:
        with store.transaction() as tx:
            doc = get_doc(tx, None, job_id)
        assert orjson.loads(doc) == ledger.get_job(job_id).status()

    def counted(tx, sql: str) -> list[tuple[str, str, int]]:
        return sorted((str(a), str(s), int(n)) for a, s, n in tx.execute(sql).fetchall())

    with store.transaction() as tx:  # the running counts are a count of the rows
        by_rows = "SELECT account_id, state, COUNT(*) FROM job_status GROUP BY account_id, state"
        expected = counted(tx, by_rows)
        assert len({s for _, s, _ in expected}) > 2
        assert job_counts(tx, None) == expected
        assert job_counts(tx, "t1") == counted(
            tx, by_rows.replace("GROUP", "WHERE tenant_id = 't1' GROUP")
        )
        # a view made before the counts existed counts its rows once, when it is set up
        tx.execute("DROP TABLE job_status_counts")
        JobStatusProjection(ledger).create_tables(tx)
        assert job_counts(tx, None) == expected
    counts = rows(store, "job_status_counts")

    position = rebuild(
        ledger, store, JobStatusProjection(ledger), JobStatusProjection(ledger, table="js_rebuild")
    )
    assert position == runner.position()
    assert rows(store) == live
    assert rows(store, "job_status_counts") == counts


def test_list_filters_and_cursor_pages(ledger, store, runner, clock) -> None:
    ids = random_workload(ledger, clock, seed=3, jobs=30)
    runner.catch_up()
    every = []
    after = 0
    while True:
        with store.transaction() as tx:
            page = list_docs(tx, "t1", JobFilters(), limit=4, after_position=after)
        every += [orjson.loads(d) for d in page.docs]
        if page.last_position is None:
            break
        after = page.last_position
    with store.transaction() as tx:
        everything = [orjson.loads(d) for d in list_docs(tx, "t1", JobFilters(), limit=100).docs]
    assert every == everything
    assert {d["tenant_id"] for d in every} == {"t1"}
    assert [d["created_at"] for d in every] == sorted(d["created_at"] for d in every)
    created_order = [str(i) for i in ids if ledger.get_job(i).tenant_id == "t1"]
    assert [d["id"] for d in every] == created_order

    some = every[len(every) // 2]
    with store.transaction() as tx:
        by_state = list_docs(tx, "t1", JobFilters(state=some["state"]), limit=100).docs
        by_account = list_docs(tx, "t1", JobFilters(account_id="a2", board_id="b1"), limit=100).docs
        cutoff = clock.now() - timedelta(days=365)
        none_before = list_docs(tx, "t1", JobFilters(created_before=cutoff), limit=100).docs
    assert {orjson.loads(d)["state"] for d in by_state} == {some["state"]}
    assert all(
        (orjson.loads(d)["account_id"], orjson.loads(d)["board_id"]) == ("a2", "b1")
        for d in by_account
    )
    assert none_before == []


def test_other_tenant_sees_nothing(ledger, store, runner) -> None:
    job_id = ledger.create_job(
        make_new_job(), tenant_id="t1", idempotency_key="k", actor="a"
    ).job.id
    runner.catch_up()
    with store.transaction() as tx:
        assert get_doc(tx, "t1", job_id) is not None
        assert get_doc(tx, "t2", job_id) is None


def test_competing_runner_cannot_apply_a_batch_twice(ledger, store, runner) -> None:
    for i in range(5):
        ledger.create_job(make_new_job(), tenant_id="t", idempotency_key=f"k{i}", actor="a")
    rival = ProjectionRunner(ledger, store, JobStatusProjection(ledger), batch_size=7)
    assert rival.position() == 0
    rival._position = 0  # it read the position before we moved
    runner.catch_up()
    with pytest.raises(LostOwnership):
        rival.run_once()
    assert rival.run_once() == 0  # re-reads the position and finds nothing left
    assert len(rows(store)) == 5


def test_saves_wake_the_runner_in_process(ledger, store, runner) -> None:
    import threading

    ledger.saved_listeners.append(runner.notify)
    stop = threading.Event()
    runner.poll_seconds = 60  # only the wake-up can make this test pass in time
    thread = threading.Thread(target=runner.run_forever, args=(stop,))
    thread.start()
    try:
        job_id = ledger.create_job(
            make_new_job(), tenant_id="t", idempotency_key="k", actor="a"
        ).job.id
        deadline = time.monotonic() + 20
        while True:
            with store.transaction() as tx:
                if get_doc(tx, "t", job_id) is not None:
                    break
            assert time.monotonic() < deadline, "the projection did not wake"
            time.sleep(0.01)
    finally:
        stop.set()
        runner.notify()
        thread.join(timeout=10)


PROJECTOR = """
import sys, threading
from jobledger.bootstrap import build
from jobledger.settings import Settings
from projections.job_status import JobStatusProjection
from projections.runner import ProjectionRunner
from storage.sql import SqlStore
service = build(Settings(database_url=sys.argv[1]), run_migrations=False)
store = SqlStore(service.database)
runner = ProjectionRunner(service.ledger, store, JobStatusProjection(service.ledger), batch_size=3)
runner.setup()
print("running", flush=True)
runner.run_forever(threading.Event())
"""


@pytest.mark.slow
def test_kill_minus_nine_mid_batch_loses_and_repeats_nothing(database_url, ledger, store, clock):
    random_workload(ledger, clock, seed=5, jobs=40)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = random.Random(99)
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", PROJECTOR, database_url],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "running"
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
        random_workload(ledger, clock, seed=rng.randint(0, 10**6), jobs=5)
    runner = ProjectionRunner(ledger, store, JobStatusProjection(ledger), batch_size=50)
    runner.setup()
    runner.catch_up()
    live = rows(store)
    rebuild(ledger, store, JobStatusProjection(ledger), JobStatusProjection(ledger, table="js_rb"))
    assert rows(store) == live
    with store.transaction() as tx:
        docs = [orjson.loads(d) for d in list_docs(tx, None, JobFilters(), limit=1000).docs]
    assert len(docs) == 55
    for doc in docs:
        from uuid import UUID

        assert doc == ledger.get_job(UUID(doc["id"])).status()


def test_position_waiter_gives_read_your_writes(ledger, store, runner) -> None:
    import threading

    from projections.runner import PositionWaiter

    waiter = PositionWaiter(store, runner.name)
    runner.position_changed.append(waiter.advanced)
    written = ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="k", actor="a")
    assert waiter.wait(written.position, timeout=0.05) is False  # nothing applied it yet
    thread = threading.Thread(target=runner.catch_up)
    thread.start()
    try:
        assert waiter.wait(written.position, timeout=20) is True
    finally:
        thread.join()
    with store.transaction() as tx:
        assert get_doc(tx, "t", written.job.id) is not None
    # a waiter in another process learns the position from the tracking row
    assert PositionWaiter(store, runner.name).wait(written.position, timeout=5) is True


def test_every_registered_projection_rebuilds_to_its_live_rows(ledger, store, clock) -> None:
    from projections.delivery_fanout import DeliveryFanout
    from projections.registry import PROJECTIONS, live, shadow

    for tenant in ("t1", "t2"):  # so that deliveries are made and attempted too
        settings = EndpointSettings(url="https://hooks.example.com/in", event_types=("*",))
        ledger.register_endpoint(tenant, settings, actor="key:x")
    random_workload(ledger, clock, seed=21, jobs=20)
    fanout = ProjectionRunner(ledger, store, DeliveryFanout(ledger))
    fanout.setup()
    fanout.catch_up()
    for note in ledger.recorder.select_notifications(
        0, 50, topics=["job-ledger:DeliveryCreated:v1"]
    ):
        clock.advance(1)
        ledger.record_delivery_attempt(
            note.originator_id,
            attempt=1,
            succeeded=note.id % 2 == 0,
            receipt={"status_code": 200 if note.id % 2 == 0 else 500, "latency_ms": 1.0},
            next_attempt_at=clock.now() if note.id % 3 else None,
            actor="delivery:test",
        )
    for name in sorted(PROJECTIONS):
        runner = ProjectionRunner(ledger, store, live(ledger, name), batch_size=5)
        runner.setup()
        runner.catch_up()
        tables = getattr(live(ledger, name), "tables", (name,))
        before = {table: rows(store, table) for table in tables}
        assert all(before.values()), name
        rebuild(ledger, store, live(ledger, name), shadow(ledger, name))
        assert {table: rows(store, table) for table in tables} == before, name


def test_a_runner_reads_only_its_topics_and_still_moves_to_the_head(ledger, store, runner):
    """Deliveries are most of the log: a job view must not fetch them, yet its position must
    pass them (lag and read-your-writes count positions)."""
    endpoint = ledger.register_endpoint(
        "t1",
        EndpointSettings(url="https://hooks.example.com/in", event_types=("*",)),
        actor="key:x",
    ).endpoint
    applied: list[str] = []
    apply = runner.projection.apply

    def spy(tx, events):
        applied.extend(type(event).__qualname__ for _, event in events)
        apply(tx, events)

    runner.projection.apply = spy
    fetched: list[str] = []
    select = ledger.recorder.select_after

    def counting_select(*args, **kwargs):
        head, notes = select(*args, **kwargs)
        fetched.extend(note.topic for note in notes)
        return head, notes

    ledger.recorder.select_after = counting_select
    for i in range(3):
        ledger.create_job(make_new_job(), tenant_id="t1", idempotency_key=f"k{i}", actor="k")
        for _ in range(4):  # 4 events no job view wants between every two job events
            ledger.create_test_delivery(endpoint, payload="{}", actor="key:x")
    runner.catch_up()
    assert applied == ["Job.JobCreated"] * 3
    assert len(fetched) == 3  # the 12 deliveries' events never left the store
    assert runner.position() == ledger.recorder.max_notification_id()

    for _ in range(3):  # the log's tail holds none of its topics
        ledger.create_test_delivery(endpoint, payload="{}", actor="key:x")
    head = ledger.recorder.max_notification_id()
    assert runner.run_once() == 3
    assert (runner.position(), len(applied)) == (head, 3)
    assert runner.run_once() == 0
