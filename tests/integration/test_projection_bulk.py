"""Large batches on both stores: `Tx.upsert_many` (COPY + one INSERT ... ON CONFLICT on
PostgreSQL) gives the rows one-by-one upserts give, and a rebuild whose batches take that path
(shadow filled without secondary indexes, then renamed into place) equals the live rows, twice
in a row, leaving the live tables with their own index names and no shadow behind."""

from __future__ import annotations

import gc
import random

import psycopg
import pytest

from ledger.application import JobLedger
from ledger.clock import ManualClock
from projections.job_status import JobStatusProjection
from projections.runner import REBUILD_GC_THRESHOLD, ProjectionRunner, _indexes, rebuild
from storage.sql import BULK_ROWS, SqlStore, Tx
from tests.conftest import make_new_job

COLUMNS = ("k", "first_seen", "v", "note", "pos")


def rows(store: SqlStore, table: str) -> list[tuple]:
    with store.transaction() as tx:
        return sorted(tuple(r) for r in tx.execute(f"SELECT * FROM {table}").fetchall())


def make_table(tx: Tx, name: str) -> None:
    tx.execute(
        f"CREATE TABLE {name} (k TEXT PRIMARY KEY, first_seen TEXT NOT NULL, "
        "v INTEGER NOT NULL, note TEXT, pos BIGINT NOT NULL)"
    )


def test_upsert_many_equals_upserting_one_by_one(store) -> None:
    rng = random.Random(5)
    notes = [None, "plain", "tab\there", "line\nbreak", "back\\slash", '{"json": "x\\"y"}', "é✓"]
    with store.transaction() as tx:
        make_table(tx, "bulk_seq")
        make_table(tx, "bulk_many")
    position = 0
    for _ in range(2):  # the second round mostly updates rows of the first
        batch = []
        for _ in range(BULK_ROWS * 3):
            position += 1
            key = f"k{rng.randrange(BULK_ROWS * 2)}"
            batch.append(
                (key, f"first-{position}", rng.randrange(1000), rng.choice(notes), position)
            )
        assert len({r[0] for r in batch}) < len(batch)  # keys repeat within the batch
        with store.transaction() as tx:
            tx.upsert("bulk_seq", COLUMNS, batch, key=("k",), keep=("first_seen",))
        with store.transaction() as tx:
            tx.upsert_many("bulk_many", COLUMNS, batch, key=("k",), keep=("first_seen",))
    expected = rows(store, "bulk_seq")
    assert len(expected) > BULK_ROWS
    assert rows(store, "bulk_many") == expected


def test_insert_many_of_new_keys_and_what_follows_when_one_exists(store) -> None:
    batch = [(f"k{i}", f"first-{i}", i, "tab\there", i) for i in range(BULK_ROWS * 2)]
    with store.transaction() as tx:
        make_table(tx, "insert_seq")
        make_table(tx, "insert_many")
        tx.upsert("insert_seq", COLUMNS, batch[:BULK_ROWS], key=("k",), keep=("first_seen",))
        tx.insert_many("insert_many", COLUMNS, batch[:BULK_ROWS], key=("k",), keep=("first_seen",))
    assert rows(store, "insert_many") == rows(store, "insert_seq")
    again = [(k, "later", v + 1, None, p + 1000) for k, _, v, _, p in batch[BULK_ROWS - 1 :]]
    before = rows(store, "insert_many")
    if store.is_postgres:  # a key there already: the COPY fails, and its transaction with it

        def copy_after_an_update() -> None:
            with store.transaction() as tx:
                tx.execute("UPDATE insert_many SET note = 'lost with the COPY'")
                tx.insert_many("insert_many", COLUMNS, again, key=("k",), keep=("first_seen",))

        with pytest.raises(psycopg.errors.UniqueViolation):
            copy_after_an_update()
        assert rows(store, "insert_many") == before
    with store.transaction() as tx:  # the next try upserts (SQLite: always)
        tx.upsert("insert_seq", COLUMNS, again, key=("k",), keep=("first_seen",))
        tx.insert_many("insert_many", COLUMNS, again, key=("k",), keep=("first_seen",))
    assert rows(store, "insert_many") == rows(store, "insert_seq")
    assert len(rows(store, "insert_many")) == BULK_ROWS * 2
    fresh = [(f"n{i}", "new", i, None, i) for i in range(BULK_ROWS)]
    with store.transaction() as tx:  # and so do later batches of that table, new keys too
        tx.upsert("insert_seq", COLUMNS, fresh, key=("k",), keep=("first_seen",))
        tx.insert_many("insert_many", COLUMNS, fresh, key=("k",), keep=("first_seen",))
    assert rows(store, "insert_many") == rows(store, "insert_seq")


def test_rebuild_in_bulk_batches_equals_the_live_rows_twice(
    ledger: JobLedger, store: SqlStore, clock: ManualClock
) -> None:
    ids = []
    for i in range(BULK_ROWS * 2):
        new = make_new_job(account_id=f"a{i % 3}", board_id=f"b{i % 4}")
        created = ledger.create_job(new, tenant_id=f"t{i % 2}", idempotency_key=f"k{i}", actor="x")
        ids.append(created.job.id)
        clock.advance(0.5)
    for job_id in ids[::2]:
        ledger.schedule(job_id)
        clock.advance(1)
    runner = ProjectionRunner(ledger, store, JobStatusProjection(ledger), batch_size=7)
    runner.setup()
    runner.catch_up()
    live = rows(store, "job_status")
    assert len(live) == len(ids)
    with store.transaction() as tx:
        indexes_before = sorted(_indexes(tx, "job_status"))
    assert any(name.startswith("job_status_") for name, _ in indexes_before)

    thresholds_seen: set[int] = set()
    threshold_before = gc.get_threshold()
    for _ in range(2):  # again: the renamed indexes' names must not get in the way
        position = rebuild(
            ledger,
            store,
            JobStatusProjection(ledger),
            JobStatusProjection(ledger, table="js_bulk"),
            progress=lambda *_: thresholds_seen.add(gc.get_threshold()[0]),
        )
        # young collections rare while it caught up, the process's own setting afterwards
        assert thresholds_seen == {REBUILD_GC_THRESHOLD}
        assert gc.get_threshold() == threshold_before
        assert position == runner.position()
        assert rows(store, "job_status") == live
        with store.transaction() as tx:
            assert sorted(_indexes(tx, "job_status")) == indexes_before
            assert _indexes(tx, "js_bulk") == []
    # the live runner carries on from the rebuilt position
    ledger.schedule(ids[1])
    runner.catch_up()
    assert len(rows(store, "job_status")) == len(ids)


def test_rows_where_in_finds_the_rows_of_those_keys_and_is_never_prepared(store) -> None:
    """Every row whose key is asked for, whatever the count (SQLite: over several IN lists);
    on PostgreSQL the statement stays unprepared however often it runs, so the server plans
    it for the table as it is (a prepared one kept a full scan planned on an empty table)."""
    with store.transaction() as tx:
        make_table(tx, "lookup")
        tx.upsert(
            "lookup",
            COLUMNS,
            [(f"k{i}", "first", i, None, i) for i in range(1200)],
            key=("k",),
        )
    wanted = [f"k{i}" for i in range(0, 1200, 2)] + ["absent"]
    with store.transaction() as tx:
        for _ in range(8):  # more than psycopg's prepare threshold (5)
            found = tx.rows_where_in("SELECT k, v FROM lookup", "k", wanted)
            assert sorted(found) == sorted((f"k{i}", i) for i in range(0, 1200, 2))
        assert tx.rows_where_in("SELECT k, v FROM lookup", "k", []) == []
        if store.is_postgres:
            prepared = tx.execute(
                "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE ?",
                ("%FROM lookup%",),
            ).fetchone()
            assert prepared is not None and prepared[0] == 0


def test_upsert_many_types_its_arrays_from_the_table(store) -> None:
    """A column of NULLs only is typed from the table, not from the values; the types read
    once per table are read again after it is dropped and made anew, or altered."""
    size = BULK_ROWS + 1
    with store.transaction() as tx:
        tx.execute("CREATE TABLE typed (k TEXT PRIMARY KEY, n BIGINT, t TEXT)")
        tx.upsert_many(
            "typed", ("k", "n", "t"), [(f"k{i}", None, None) for i in range(size)], key=("k",)
        )
    with store.transaction() as tx:
        tx.execute("DROP TABLE typed")
        tx.execute("CREATE TABLE typed (k TEXT PRIMARY KEY, n BYTEA, t INTEGER)")
        tx.upsert_many(
            "typed", ("k", "n", "t"), [(f"k{i}", b"\x00", i) for i in range(size)], key=("k",)
        )
    with store.transaction() as tx:
        tx.execute("ALTER TABLE typed ADD COLUMN w DOUBLE PRECISION")
        tx.upsert_many(
            "typed",
            ("k", "n", "t", "w"),
            [(f"k{i}", b"\xff", -i, i / 2) for i in range(size)],
            key=("k",),
        )
    assert rows(store, "typed") == sorted((f"k{i}", b"\xff", -i, i / 2) for i in range(size))
