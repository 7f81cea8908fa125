"""The job-status read model: one row per job with every field of `GET /v1/jobs/{id}`.

Rows are derived only from the log. Each job event is applied to the job as it was just before
it (taken from a bounded in-memory cache, or rebuilt from the log up to that version), so a row
is by construction what the aggregate would say: `Job.status()` after that event. The row keeps
the filterable fields as columns (indexed for the list filters and for the worker's due scan)
and the whole status as JSON text (`doc`) that reads return without re-encoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson

from ledger.application import JobLedger
from ledger.clock import iso_z
from ledger.job import Job
from projections.aggregate_cache import AggregateCache
from projections.counts import Moves, create_counts_table
from projections.doc_cache import DocCache
from projections.pages import Page, page_of
from projections.runner import TRACKING_TABLE
from storage.sql import SqlStore, Tx, utc_text, utc_texts

JOB_TOPICS = frozenset(
    cls.TOPIC
    for cls in (
        Job.JobCreated,
        Job.JobScheduled,
        Job.AttemptStarted,
        Job.JobPublished,
        Job.AttemptFailed,
        Job.JobFailedTerminally,
        Job.JobCanceled,
        Job.JobRequeued,
        Job.JobPaced,
    )
)
COLUMNS = (
    "job_id",
    "tenant_id",
    "state",
    "account_id",
    "board_id",
    "created_at",
    "updated_at",
    "state_entered_at",
    "next_run_at",
    "lease_expires_at",
    "attempts",
    "version",
    "position",
    "created_position",
    "doc",
)
# Set once, by the job's first event; later upserts leave it alone.
KEEP_ON_UPDATE = frozenset({"job_id", "created_position"})


# The running counts' key (`job_status_counts`, `job_counts`).
COUNT_KEYS = ("tenant_id", "account_id", "state")


def _count_key(job: Job) -> tuple[str, str, str]:
    return job.tenant_id, job.account_id, str(job.state)


def _is_final(job: Job) -> bool:
    return job.is_final


class JobStatusProjection:
    def __init__(
        self,
        ledger: JobLedger,
        *,
        table: str = "job_status",
        cache_size: int = 10_000,
        docs: DocCache | None = None,
    ):
        self.ledger = ledger
        self.docs = docs  # status documents kept in memory (`projections.doc_cache`)
        self.table = table
        self.name = table
        self.counts_table = f"{table}_counts"
        self.tables = (table, self.counts_table)
        self.topics = JOB_TOPICS
        self._cache = AggregateCache(ledger, size=cache_size, settled=_is_final)

    def create_tables(self, tx: Tx) -> None:
        t = self.table
        tx.execute(
            f"CREATE TABLE IF NOT EXISTS {t} ("
            "job_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, state TEXT NOT NULL, "
            "account_id TEXT NOT NULL, board_id TEXT NOT NULL, created_at TEXT NOT NULL, "
            "updated_at TEXT NOT NULL, state_entered_at TEXT NOT NULL, next_run_at TEXT, "
            "lease_expires_at TEXT, attempts INTEGER NOT NULL, version INTEGER NOT NULL, "
            "position BIGINT NOT NULL, created_position BIGINT NOT NULL, doc TEXT NOT NULL)"
        )
        for name, cols in (
            ("created", "created_position"),
            ("created_at", "created_at"),  # the console's jobs created per hour
            ("tenant_created", "tenant_id, created_position"),
            ("tenant_state", "tenant_id, state, created_position"),
            ("tenant_account", "tenant_id, account_id, created_position"),
            ("tenant_board", "tenant_id, board_id, created_position"),
            ("state_due", "state, next_run_at"),
            ("state_entered", "state, state_entered_at"),
        ):
            tx.execute(f"CREATE INDEX IF NOT EXISTS {t}_{name} ON {t} ({cols})")
        create_counts_table(tx, self.counts_table, COUNT_KEYS, "jobs", t)

    def drop_tables(self, tx: Tx) -> None:
        for table in self.tables:
            tx.execute(f"DROP TABLE IF EXISTS {table}")

    def forget(self) -> None:
        self._cache.clear()
        if self.docs is not None:
            self.docs.abandon()

    def prepare(self, store: SqlStore, events: Sequence[tuple[int, Any]]) -> None:
        """Before the view's transaction (the runner calls it): load the jobs the batch needs,
        so `apply` never reads the ledger while holding SQLite's write lock."""
        self._cache.preload(event for _, event in events)

    def apply(self, tx: Tx, events: Sequence[tuple[int, Any]]) -> None:
        # job -> (the job after its last event here, that event's position, its creation's
        # position when that is in this batch, else 0): one row per job, written once
        changed: dict[UUID, tuple[Job, int, int]] = {}
        moves = Moves(_count_key)
        for position, event in events:
            job: Job = self._cache.apply(event, moves.leave)
            moves.enter(job)
            if event.originator_version == 1:
                changed[event.originator_id] = (job, position, position)
            else:
                before = changed.get(event.originator_id)
                changed[event.originator_id] = (job, position, before[2] if before else 0)
        new: list[tuple[Any, ...]] = []
        old: list[tuple[Any, ...]] = []
        for job, position, created_position in changed.values():
            (new if created_position else old).append(self._row(job, position, created_position))
        if self.docs is not None:  # published when this transaction has committed
            for row in (*new, *old):
                self.docs.stage(row[0], row[1], row[-1])
        # a job created in this batch has no row yet (batches apply exactly once)
        tx.insert_many(self.table, COLUMNS, new, key=("job_id",), keep=KEEP_ON_UPDATE)
        tx.upsert_many(self.table, COLUMNS, old, key=("job_id",), keep=KEEP_ON_UPDATE)
        moves.write(tx, self.counts_table, COUNT_KEYS, "jobs")

    @staticmethod
    def _row(job: Job, position: int, created_position: int) -> tuple[Any, ...]:
        created_at, created_text = _times(job.created_at)
        updated_at, updated_text = _times(job.updated_at)
        entered_at, entered_text = (
            (updated_at, updated_text)
            if job.state_entered_at is job.updated_at
            else _times(job.state_entered_at)
        )
        next_run_at, next_run_text = _times(job.next_run_at)
        lease_expires_at, lease_expires_text = _times(job.lease_expires_at)
        job_id = orjson.dumps(job.id)[1:-1].decode()  # str(job.id), three times faster
        state = str(job.state)
        doc = {  # `Job.status()`, with each time formatted once for the doc and its column
            "id": job_id,
            "tenant_id": job.tenant_id,
            "idempotency_key": job.idempotency_key,
            "state": state,
            "account_id": job.account_id,
            "board_id": job.board_id,
            "pin": job.pin,
            "publish_at": iso_z(job.publish_at),
            "mode": job.mode,
            "simulate": job.simulate,
            "metadata": job.metadata,
            "attempts": job.attempts,
            "last_error": job.last_error,
            "external_ref": job.external_ref,
            "created_at": created_at,
            "updated_at": updated_at,
            "state_entered_at": entered_at,
            "next_run_at": next_run_at,
            "lease_expires_at": lease_expires_at,
            "version": job.version,
        }
        return (
            job_id,
            job.tenant_id,
            state,
            job.account_id,
            job.board_id,
            created_text,
            updated_text,
            entered_text,
            next_run_text,
            lease_expires_text,
            job.attempts,
            job.version,
            position,
            created_position,
            orjson.dumps(doc).decode(),
        )


def _times(value: datetime | None) -> tuple[str | None, str | None]:
    """(`iso_z`, `utc_text`) of one time: the API's text and the sortable column's, from one
    formatting (`storage.sql.utc_texts`) for the UTC times events carry."""
    if value is None:
        return None, None
    if value.tzinfo is UTC and value.year >= 1000:
        return utc_texts(value)
    return iso_z(value), utc_text(value)


# -- queries --


def job_counts(
    tx: Tx, tenant_id: str | None, table: str = "job_status"
) -> list[tuple[str, str, int]]:
    """(account, state, jobs) now, from the running counts (all tenants: None): a read of
    one row per account and state, where counting the view reads every job."""
    scope, params = ("WHERE tenant_id = ? ", [tenant_id]) if tenant_id is not None else ("", [])
    rows = tx.execute(
        f"SELECT account_id, state, SUM(jobs) FROM {table}_counts {scope}"
        "GROUP BY account_id, state ORDER BY account_id, state",
        params,
    ).fetchall()
    return [(str(a), str(s), int(n)) for a, s, n in rows]


@dataclass(frozen=True)
class JobFilters:
    state: str | None = None
    account_id: str | None = None
    board_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


def doc_query(
    tenant_id: str | None, job_id: UUID, table: str = "job_status"
) -> tuple[str, tuple[str, ...]]:
    """The SQL (`?` placeholders) and parameters that read one job's status JSON, its tenant
    and the view's position, in one snapshot (`DocCache.fill`); no row when the job belongs to
    another tenant."""
    columns = f"doc, tenant_id, (SELECT position FROM {TRACKING_TABLE} WHERE name = '{table}')"
    if tenant_id is None:
        return f"SELECT {columns} FROM {table} WHERE job_id = ?", (str(job_id),)
    return (
        f"SELECT {columns} FROM {table} WHERE job_id = ? AND tenant_id = ?",
        (str(job_id), tenant_id),
    )


def get_doc(tx: Tx, tenant_id: str | None, job_id: UUID, table: str = "job_status") -> str | None:
    """The status JSON of one job, or None (also when it belongs to another tenant)."""
    row = tx.execute(*doc_query(tenant_id, job_id, table)).fetchone()
    return None if row is None else str(row[0])


def list_docs(
    tx: Tx,
    tenant_id: str | None,
    filters: JobFilters,
    *,
    limit: int,
    after_position: int = 0,
    table: str = "job_status",
) -> Page:
    """Oldest first, in the order the jobs were created (their first event's log position);
    `after_position` continues after the previous page's `last_position`."""
    sql, params = list_query(
        tenant_id, filters, limit=limit, after_position=after_position, table=table
    )
    return page_of(tx.execute(sql, params).fetchall(), limit)


def list_query(
    tenant_id: str | None,
    filters: JobFilters,
    *,
    limit: int,
    after_position: int = 0,
    table: str = "job_status",
) -> tuple[str, list[Any]]:
    """The SQL (`?` placeholders) and parameters of `list_docs`'s read, whose rows `page_of`
    makes a page of."""
    where = ["created_position > ?"]
    params: list[Any] = [after_position]
    if tenant_id is not None:
        where.append("tenant_id = ?")
        params.append(tenant_id)
    for column in ("state", "account_id", "board_id"):
        value = getattr(filters, column)
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if filters.created_after is not None:
        where.append("created_at > ?")
        params.append(utc_text(filters.created_after))
    if filters.created_before is not None:
        where.append("created_at < ?")
        params.append(utc_text(filters.created_before))
    sql = (
        f"SELECT doc, created_position FROM {table} WHERE {' AND '.join(where)} "
        "ORDER BY created_position LIMIT ?"
    )
    params.append(limit + 1)  # one more: whether a next page follows
    return sql, params
