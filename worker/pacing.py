"""Pacing: a per-account and a global token bucket, shared by every worker process.

Bucket math is pure (`refill`, `take`). A bucket may go into debt: taking from an empty bucket
still succeeds, and the answer is how long until that token exists. The job that took it
*reserves* it (a row in `pacing_reservations`) and is paced to that time (`JobPaced`), so a
backlog is spread out once instead of being re-paced on every pass, and a job that comes back
at its time runs on the token it already holds.

Order and fairness: the account bucket is taken first; the global bucket only once the account
has a token for the job, so one account's backlog never runs the global bucket into debt for
everyone else. Reservations a job holds are released (deleted) when it finally gets all its
tokens; a reservation still in the future hides the job from every worker's due scan.

Shared state lives in two tables, updated in one transaction per decision: on PostgreSQL the
bucket rows are locked with `SELECT ... FOR UPDATE` (account before global, so no deadlock);
on SQLite `BEGIN IMMEDIATE` serialises the transaction. Tables are created by `create_tables`,
idempotently, under the migration advisory lock (see `worker.runner.prepare_tables`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from storage.sql import SqlStore, Tx, parse_utc_text, utc_text

BUCKETS_TABLE = "pacing_buckets"
RESERVATIONS_TABLE = "pacing_reservations"
GLOBAL_BUCKET = "global"


@dataclass(frozen=True)
class BucketSpec:
    capacity: float
    refill_per_second: float

    def __post_init__(self) -> None:
        if self.capacity < 1 or self.refill_per_second <= 0:
            raise ValueError("a bucket needs capacity >= 1 and a positive refill rate")


def refill(tokens: float, elapsed_seconds: float, spec: BucketSpec) -> float:
    """Tokens after `elapsed_seconds` of refilling (never above capacity; clocks never go back)."""
    return min(spec.capacity, tokens + max(0.0, elapsed_seconds) * spec.refill_per_second)


def take(tokens: float, spec: BucketSpec) -> tuple[float, float]:
    """Take one token: (tokens left, seconds until the token taken exists; 0 if it exists now)."""
    left = tokens - 1.0
    return left, (0.0 if left >= 0 else -left / spec.refill_per_second)


@dataclass(frozen=True)
class Decision:
    wait_seconds: float  # 0: go now
    bucket: str | None = None  # the bucket that made it wait

    @property
    def go(self) -> bool:
        return self.wait_seconds <= 0


class Pacer:
    def __init__(self, store: SqlStore, *, account: BucketSpec, global_: BucketSpec) -> None:
        self.store = store
        self.account = account
        self.global_ = global_

    @staticmethod
    def create_tables(tx: Tx) -> None:
        tx.execute(
            f"CREATE TABLE IF NOT EXISTS {BUCKETS_TABLE} (bucket TEXT PRIMARY KEY, "
            "tokens DOUBLE PRECISION NOT NULL, refreshed_at TEXT NOT NULL)"
        )
        tx.execute(
            f"CREATE TABLE IF NOT EXISTS {RESERVATIONS_TABLE} (job_id TEXT NOT NULL, "
            "bucket TEXT NOT NULL, run_at TEXT NOT NULL, PRIMARY KEY (job_id, bucket))"
        )
        tx.execute(
            f"CREATE INDEX IF NOT EXISTS {RESERVATIONS_TABLE}_run_at "
            f"ON {RESERVATIONS_TABLE} (run_at)"
        )

    def acquire(self, job_id: str, account_id: str, now: datetime) -> Decision:
        """Take (or use the reserved) account and global tokens for one attempt of a job."""
        buckets = ((f"account:{account_id}", self.account), (GLOBAL_BUCKET, self.global_))
        with self.store.transaction() as tx:
            held = {
                str(r[0]): parse_utc_text(r[1])
                for r in tx.execute(
                    f"SELECT bucket, run_at FROM {RESERVATIONS_TABLE} WHERE job_id = ?", (job_id,)
                ).fetchall()
            }
            taken_now: list[str] = []
            for bucket, spec in buckets:
                reserved_for = held.get(bucket)
                if reserved_for is not None:
                    if reserved_for > now:
                        return Decision((reserved_for - now).total_seconds(), bucket)
                    continue
                wait = self._take(tx, bucket, spec, now)
                if wait > 0:
                    run_at = now + timedelta(seconds=wait)
                    rows = [(job_id, b, utc_text(now)) for b in taken_now]
                    rows.append((job_id, bucket, utc_text(run_at)))
                    tx.executemany(
                        f"INSERT INTO {RESERVATIONS_TABLE} (job_id, bucket, run_at) "
                        "VALUES (?, ?, ?) ON CONFLICT (job_id, bucket) DO UPDATE "
                        "SET run_at = excluded.run_at",
                        rows,
                    )
                    return Decision(wait, bucket)
                taken_now.append(bucket)
            if held:
                tx.execute(f"DELETE FROM {RESERVATIONS_TABLE} WHERE job_id = ?", (job_id,))
        return Decision(0.0)

    def _take(self, tx: Tx, bucket: str, spec: BucketSpec, now: datetime) -> float:
        tx.execute(
            f"INSERT INTO {BUCKETS_TABLE} (bucket, tokens, refreshed_at) VALUES (?, ?, ?) "
            "ON CONFLICT (bucket) DO NOTHING",
            (bucket, spec.capacity, utc_text(now)),
        )
        lock = " FOR UPDATE" if tx.is_postgres else ""
        row = tx.execute(
            f"SELECT tokens, refreshed_at FROM {BUCKETS_TABLE} WHERE bucket = ?{lock}", (bucket,)
        ).fetchone()
        refreshed = parse_utc_text(row[1])
        assert refreshed is not None
        tokens = refill(float(row[0]), (now - refreshed).total_seconds(), spec)
        tokens, wait = take(tokens, spec)
        tx.execute(
            f"UPDATE {BUCKETS_TABLE} SET tokens = ?, refreshed_at = ? WHERE bucket = ?",
            (tokens, utc_text(max(now, refreshed)), bucket),
        )
        return wait

    def purge(self, before: datetime) -> int:
        """Drop reservations long past (jobs canceled or run elsewhere); returns rows removed."""
        with self.store.transaction() as tx:
            cur = tx.execute(
                f"DELETE FROM {RESERVATIONS_TABLE} WHERE run_at < ?", (utc_text(before),)
            )
        return max(cur.rowcount, 0)
