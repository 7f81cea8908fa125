"""Pacing decisions in batches (`Pacer.acquire_many`), on both stores: a worker pass decides for
all its candidates in one transaction, and those decisions are the ones one `acquire` after
another would make."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from storage.sql import SqlStore, utc_text
from tests.integration.worker_harness import Harness
from worker.pacing import BUCKETS_TABLE, RESERVATIONS_TABLE, BucketSpec, Decision, Pacer

ACCOUNT = BucketSpec(2, 1.0)
GLOBAL = BucketSpec(3, 2.0)
REQUESTS = [
    ("j0", "a"),
    ("j1", "a"),  # holds a reservation of account a's bucket, 5 s ahead
    ("j2", "b"),  # holds both its tokens, reserved for a moment already past
    ("j3", "a"),
    ("j4", "c"),
    ("j5", "b"),
    ("j6", "a"),
    ("j7", "c"),
]


def _fresh(store: SqlStore, now) -> None:
    held = [
        ("j1", "account:a", now + timedelta(seconds=5)),
        ("j2", "account:b", now - timedelta(seconds=1)),
        ("j2", "global", now - timedelta(seconds=1)),
    ]
    with store.transaction() as tx:
        Pacer.create_tables(tx)
        tx.execute(f"DELETE FROM {BUCKETS_TABLE}")
        tx.execute(f"DELETE FROM {RESERVATIONS_TABLE}")
        tx.executemany(
            f"INSERT INTO {RESERVATIONS_TABLE} (job_id, bucket, run_at) VALUES (?, ?, ?)",
            [(j, b, utc_text(t)) for j, b, t in held],
        )


def _tables(store: SqlStore) -> tuple[list[tuple], list[tuple]]:
    with store.transaction() as tx:
        buckets = tx.execute(f"SELECT bucket, tokens FROM {BUCKETS_TABLE} ORDER BY bucket")
        bucket_rows = [(str(r[0]), float(r[1])) for r in buckets.fetchall()]
        reservations = tx.execute(
            f"SELECT job_id, bucket, run_at FROM {RESERVATIONS_TABLE} ORDER BY job_id, bucket"
        )
        reservation_rows = [(str(r[0]), str(r[1]), str(r[2])) for r in reservations.fetchall()]
    return bucket_rows, reservation_rows


def test_a_batch_decides_as_one_acquire_after_another(store, clock) -> None:
    pacer = Pacer(store, account=ACCOUNT, global_=GLOBAL)
    now = clock.now()
    _fresh(store, now)
    one_by_one = [pacer.acquire(job_id, account, now) for job_id, account in REQUESTS]
    after_one_by_one = _tables(store)
    _fresh(store, now)
    assert pacer.acquire_many(REQUESTS, now) == one_by_one
    assert _tables(store) == after_one_by_one
    go = Decision(0.0)
    assert one_by_one == [
        go,
        Decision(5.0, "account:a"),  # its reservation still holds it
        go,  # on the tokens it reserved; they are released
        go,
        go,  # the global bucket's last token
        Decision(0.5, "global"),  # account b's token is taken, the global one is owed
        Decision(1.0, "account:a"),
        Decision(1.0, "global"),
    ]
    at = utc_text
    assert after_one_by_one == (
        [("account:a", -1.0), ("account:b", 1.0), ("account:c", 0.0), ("global", -2.0)],
        [
            ("j1", "account:a", at(now + timedelta(seconds=5))),
            ("j5", "account:b", at(now)),
            ("j5", "global", at(now + timedelta(seconds=0.5))),
            ("j6", "account:a", at(now + timedelta(seconds=1))),
            ("j7", "account:c", at(now)),
            ("j7", "global", at(now + timedelta(seconds=1))),
        ],
    )


def test_a_batch_stops_deciding_once_enough_jobs_may_go(store, clock) -> None:
    pacer = Pacer(store, account=ACCOUNT, global_=GLOBAL)
    now = clock.now()
    _fresh(store, now)
    decisions = pacer.acquire_many(REQUESTS, now, go_limit=2)
    assert decisions == [Decision(0.0), Decision(5.0, "account:a"), Decision(0.0)]
    buckets, reservations = _tables(store)
    assert buckets == [("account:a", 1.0), ("account:b", 2.0), ("account:c", 2.0), ("global", 2.0)]
    assert [r[0] for r in reservations] == ["j1"]  # j2's were released, nobody else's taken


def test_batches_of_the_same_accounts_in_other_orders_do_not_deadlock(store, clock) -> None:
    """Each batch locks its buckets in name order: taking them as the jobs come would have
    two workers each hold one account's bucket and wait for the other's (a deadlock, which
    PostgreSQL breaks by failing one of them)."""
    now = clock.now()
    _fresh(store, now)
    roomy = BucketSpec(1_000_000, 1.0)
    errors: list[BaseException] = []

    def decide(accounts: list[str], name: str) -> None:
        pacer = Pacer(store, account=roomy, global_=roomy)
        try:
            for i in range(40):
                pacer.acquire_many([(f"{name}-{i}-{a}", a) for a in accounts], now)
        except Exception as error:  # reported below
            errors.append(error)

    threads = [
        threading.Thread(target=decide, args=(["x", "y", "z"], "one")),
        threading.Thread(target=decide, args=(["z", "y", "x"], "two")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    buckets, _ = _tables(store)
    taken = {name: 1_000_000 - tokens for name, tokens in buckets}
    assert taken == {"account:x": 80, "account:y": 80, "account:z": 80, "global": 240}


@pytest.mark.postgres
def test_a_pass_paces_its_jobs_in_one_transaction(postgres_url, clock) -> None:
    """The claim's row locks are held while the pass decides: its pacing decisions and its
    JobPaced events are one transaction each, not one per job (the projection's updates of
    those rows wait for the claim)."""
    from jobledger.bootstrap import build
    from jobledger.settings import Settings

    service = build(Settings(database_url=postgres_url), clock=clock)
    store = SqlStore(service.database)
    try:
        pacer = Pacer(store, account=ACCOUNT, global_=BucketSpec(100, 10.0))
        h = Harness(service.ledger, store, clock, pacer=pacer, concurrency=10)
        jobs = [h.create(f"k{i}", account_id="busy") for i in range(12)]
        h.step()  # schedules
        h.step()  # claims 10: 2 go on the account's tokens, 8 are paced
        states = [service.ledger.get_job(j).state for j in jobs]
        assert states.count("published") == 2
        paced = [j for j in jobs if "JobPaced" in h.types(j)]
        assert len(paced) == 8
        with store.transaction() as tx:
            writes = tx.execute(
                "SELECT count(DISTINCT xmin::text) FROM ledger_events WHERE topic LIKE ?",
                ("job-ledger:JobPaced:%",),
            ).fetchone()[0]
            reservation_writes = tx.execute(
                f"SELECT count(DISTINCT xmin::text) FROM {RESERVATIONS_TABLE}"
            ).fetchone()[0]
        assert (writes, reservation_writes) == (1, 1)
    finally:
        store.close()
        service.close()
