"""The worker's due scan on PostgreSQL against a paced backlog, with the planner's statistics
taken while the tables were empty (as after a `VACUUM (ANALYZE)` on a quiet service).

Seen in the scale bench (issue 8, figure 6): 12,000 jobs for one account, paced, and each due
scan took 0.25 to 3.4 s of the server's CPU, growing with the backlog. The plan was a nested
loop that read the whole reservations table once per candidate job: the statistics said it was
empty. These tests count the rows the scan reads, not its time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from projections.job_status import COLUMNS, JobStatusProjection
from storage.config import parse_database_url
from storage.sql import SqlStore, utc_text
from worker.pacing import RESERVATIONS_TABLE, Pacer
from worker.queue import WorkQueue

pytestmark = pytest.mark.postgres

DUE = 2000  # scheduled jobs whose time has come
RESERVED = 1000  # of them, those still holding a reservation in the future
# Passes over an empty queue first: psycopg prepares a statement on its 5th run, and the server
# plans a prepared statement once for all values (a generic plan) after 5 more. That plan,
# made while the tables were empty, is the one that read the reservations once per job.
PASSES_BEFORE = 12


def _job_id(i: int) -> str:
    return f"00000000-0000-0000-0000-{i:012d}"


def _row(i: int, due_at: datetime) -> tuple[object, ...]:
    stamp = utc_text(due_at)
    values: dict[str, object] = {
        "job_id": _job_id(i),
        "tenant_id": "t",
        "state": "scheduled",
        "account_id": "acct",
        "board_id": "board",
        "created_at": stamp,
        "updated_at": stamp,
        "state_entered_at": stamp,
        "next_run_at": stamp,
        "lease_expires_at": None,
        "attempts": 0,
        "version": 2,
        "position": i + 1,
        "created_position": i + 1,
        "doc": "{}",
    }
    return tuple(values[c] for c in COLUMNS)


def _reservation_rows_read(store: SqlStore) -> int:
    with store.transaction() as tx:
        tx.execute("SELECT pg_stat_force_next_flush()")
    with store.transaction() as tx:
        row = tx.execute(
            "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) "
            "FROM pg_stat_user_tables WHERE relname = ? AND schemaname = current_schema()",
            (RESERVATIONS_TABLE,),
        ).fetchone()
    return int(row[0]) if row else 0


def test_the_due_scan_reads_the_reservations_once_not_once_per_job(postgres_url: str) -> None:
    database = parse_database_url(postgres_url)
    with psycopg.connect(postgres_url.split("?")[0], autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {database.schema}")
    # one connection: the scan's statistics are flushed by the backend that made them
    store = SqlStore(database, max_connections=1)
    try:
        with store.transaction() as tx:
            if int(tx.execute("SHOW server_version_num").fetchone()[0]) < 150000:
                pytest.skip("pg_stat_force_next_flush() needs PostgreSQL 15")
            JobStatusProjection(None, table="job_status").create_tables(tx)  # type: ignore[arg-type]
            Pacer.create_tables(tx)
        with store.transaction() as tx:  # statistics of empty tables
            tx.execute("ANALYZE job_status")
            tx.execute(f"ANALYZE {RESERVATIONS_TABLE}")
        now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
        queue = WorkQueue(store)
        for _ in range(PASSES_BEFORE):  # a quiet worker's passes: the scan is prepared then
            with queue.claim("due", now, 50) as due:
                assert due == []
        with store.transaction() as tx:
            tx.executemany(
                f"INSERT INTO job_status ({', '.join(COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in COLUMNS)})",
                [_row(i, now - timedelta(seconds=DUE - i)) for i in range(DUE)],
            )
            tx.executemany(  # the oldest jobs were paced: their new time is not in the view yet
                f"INSERT INTO {RESERVATIONS_TABLE} (job_id, bucket, run_at) VALUES (?, ?, ?)",
                [
                    (_job_id(i), "account:acct", utc_text(now + timedelta(hours=1)))
                    for i in range(RESERVED)
                ],
            )
        before = _reservation_rows_read(store)
        with queue.claim("due", now, 50) as due:
            claimed = [c.job_id for c in due]
        read = _reservation_rows_read(store) - before
        # what it claimed: the 50 oldest jobs without a reservation
        assert [int(str(j)[-12:]) for j in claimed] == list(range(RESERVED, RESERVED + 50))
        # linear: at most a couple of passes over the reservations, whatever the plan; the
        # nested loop read about DUE * RESERVED / 2 rows here (over a million)
        assert read <= 3 * RESERVED
    finally:
        store.close()
