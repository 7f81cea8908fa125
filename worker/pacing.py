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

Shared state lives in two tables, updated in one transaction per batch of decisions (a worker
pass decides for all its candidates at once): on PostgreSQL the bucket rows are locked with
`SELECT ... FOR UPDATE` in name order (account buckets before the global one, so no
deadlock); on SQLite `BEGIN IMMEDIATE` serialises the transaction. Tables are created by
`create_tables`, idempotently, under the migration advisory lock (see
`worker.runner.prepare_tables`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

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


@dataclass
class _Bucket:
    """A bucket row, locked for the transaction that holds it."""

    tokens: float
    refreshed_at: datetime
    taken: bool = False

    def take(self, spec: BucketSpec, now: datetime) -> float:
        """Refill to `now`, take one token; seconds until that token exists (0: it does)."""
        elapsed = (now - self.refreshed_at).total_seconds()
        self.tokens, wait = take(refill(self.tokens, elapsed, spec), spec)
        self.refreshed_at = max(now, self.refreshed_at)
        self.taken = True
        return wait


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
        return self.acquire_many([(job_id, account_id)], now)[0]

    def acquire_many(
        self, requests: Sequence[tuple[str, str]], now: datetime, *, go_limit: int | None = None
    ) -> list[Decision]:
        """`acquire` for each (job id, account id) in order, in one transaction.

        The decisions are those of one `acquire` call after another. Every bucket the batch may
        take from is locked first, in name order, so batches of different accounts in other
        processes cannot deadlock; reservations are read in one statement and written in one
        more. With `go_limit`, deciding stops after that many jobs may go (the caller has room
        for no more): the answer then covers only the first requests."""
        if not requests:
            return []
        accounts = {account_id for _, account_id in requests}
        names = sorted({f"account:{a}" for a in accounts} | {GLOBAL_BUCKET})
        with self.store.transaction() as tx:
            buckets = self._lock_buckets(tx, names, now)
            held: dict[str, dict[str, datetime]] = {}
            for row in tx.rows_where_in(
                f"SELECT job_id, bucket, run_at FROM {RESERVATIONS_TABLE}",
                "job_id",
                {job_id for job_id, _ in requests},
            ):
                run_at = parse_utc_text(row[2])
                assert run_at is not None
                held.setdefault(str(row[0]), {})[str(row[1])] = run_at
            decisions: list[Decision] = []
            reserve: list[tuple[str, str, Any]] = []
            release: list[str] = []
            gone = 0
            for job_id, account_id in requests:
                if go_limit is not None and gone >= go_limit:
                    break
                decision, reservations = self._decide(
                    job_id, account_id, held.get(job_id, {}), buckets, now
                )
                decisions.append(decision)
                reserve += reservations
                if decision.go:
                    gone += 1
                    if job_id in held:
                        release.append(job_id)
            tx.executemany(
                f"INSERT INTO {RESERVATIONS_TABLE} (job_id, bucket, run_at) VALUES (?, ?, ?) "
                "ON CONFLICT (job_id, bucket) DO UPDATE SET run_at = excluded.run_at",
                reserve,
            )
            tx.executemany(
                f"DELETE FROM {RESERVATIONS_TABLE} WHERE job_id = ?", [(j,) for j in release]
            )
            tx.executemany(
                f"UPDATE {BUCKETS_TABLE} SET tokens = ?, refreshed_at = ? WHERE bucket = ?",
                [(b.tokens, utc_text(b.refreshed_at), n) for n, b in buckets.items() if b.taken],
            )
        return decisions

    def _decide(
        self,
        job_id: str,
        account_id: str,
        held: dict[str, datetime],
        buckets: dict[str, _Bucket],
        now: datetime,
    ) -> tuple[Decision, list[tuple[str, str, Any]]]:
        """One job's decision, and the reservations it makes (none when it may go, or when a
        reservation still in the future holds it back)."""
        taken_now: list[str] = []
        order = ((f"account:{account_id}", self.account), (GLOBAL_BUCKET, self.global_))
        for bucket, spec in order:
            reserved_for = held.get(bucket)
            if reserved_for is not None:
                if reserved_for > now:
                    return Decision((reserved_for - now).total_seconds(), bucket), []
                continue
            wait = buckets[bucket].take(spec, now)
            if wait > 0:
                rows = [(job_id, b, utc_text(now)) for b in taken_now]
                rows.append((job_id, bucket, utc_text(now + timedelta(seconds=wait))))
                return Decision(wait, bucket), rows
            taken_now.append(bucket)
        return Decision(0.0), []

    def _lock_buckets(self, tx: Tx, names: list[str], now: datetime) -> dict[str, _Bucket]:
        specs = {name: self.global_ if name == GLOBAL_BUCKET else self.account for name in names}
        tx.executemany(
            f"INSERT INTO {BUCKETS_TABLE} (bucket, tokens, refreshed_at) VALUES (?, ?, ?) "
            "ON CONFLICT (bucket) DO NOTHING",
            [(name, specs[name].capacity, utc_text(now)) for name in names],
        )
        lock = " FOR UPDATE" if tx.is_postgres else ""
        buckets: dict[str, _Bucket] = {}
        for name in names:  # one at a time, in name order: every process locks in this order
            row = tx.execute(
                f"SELECT tokens, refreshed_at FROM {BUCKETS_TABLE} WHERE bucket = ?{lock}",
                (name,),
            ).fetchone()
            refreshed = parse_utc_text(row[1])
            assert refreshed is not None
            buckets[name] = _Bucket(float(row[0]), refreshed)
        return buckets

    def purge(self, before: datetime) -> int:
        """Drop reservations long past (jobs canceled or run elsewhere); returns rows removed."""
        with self.store.transaction() as tx:
            cur = tx.execute(
                f"DELETE FROM {RESERVATIONS_TABLE} WHERE run_at < ?", (utc_text(before),)
            )
        return max(cur.rowcount, 0)
