"""The job read path of the API, behind one small interface (`JobReads`).

`AggregateJobReads` answers from the event-sourced aggregates themselves: `get` replays one job,
`list` walks the notification log filtered to the `JobCreated` topic. It is correct but costs a
replay per listed job and a log scan per page. The job-status projection (a later issue) replaces
it with indexed rows; routes depend only on `JobReads`, so nothing else changes then.

All methods are synchronous (the ledger is) and are called from worker threads. A `tenant_id` of
None means "every tenant" (admin keys). Another tenant's job is `JobNotFound`, never a 403.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

import orjson

from ledger.application import CHECKPOINT_LOG_ID, JobLedger
from ledger.errors import JobNotFound, store_errors
from ledger.job import Job
from ledger.receipt import build_receipt
from ledger.timeline import timeline_entry
from projections.doc_cache import DocCache
from projections.job_status import JobFilters as ViewFilters
from projections.job_status import doc_query, get_doc, list_docs, list_query
from projections.pages import page_of
from projections.runner import PositionWaiter
from storage.async_rows import AsyncRows
from storage.sql import SqlStore

SCAN_BATCH = 500
# Connections of the event-loop read path (`StatusDocs`), opened as concurrent reads need them.
# At 32 clients on 2 cores (3 runs of each, in turns, twice): 4 connections, before requests
# waited their turn in `AsyncRows` rather than in the pool, gave 4,200-4,550 reads/s at
# 219-235 us of the API's CPU each; with that wait, 8 gave 5,090-5,540 at 179-195 us and 16
# gave 5,720-6,220 at 160-174 us.
STATUS_POOL_SIZE = 16
Rows = list[dict[str, Any]]  # (an alias: `list` is also a method name below)
_CURSOR = re.compile(r"^log:([1-9][0-9]{0,18})$")


class InvalidCursor(ValueError):
    """The cursor is not one this API returned."""


@dataclass(frozen=True)
class JobFilters(ViewFilters):
    """The list filters (`projections.job_status` reads them as they are), plus what the
    aggregate path can decide from a job's creation alone."""

    def admits_creation(self, event: Any) -> bool:
        """The filters decidable from the job's `JobCreated` event alone."""
        return (
            (self.account_id is None or event.account_id == self.account_id)
            and (self.board_id is None or event.board_id == self.board_id)
            and (self.created_after is None or event.timestamp > self.created_after)
            and (self.created_before is None or event.timestamp < self.created_before)
        )


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


class JobReads(Protocol):
    def get(
        self,
        tenant_id: str | None,
        job_id: UUID,
        as_of: datetime | None = None,
        min_position: int | None = None,
    ) -> dict[str, Any]:
        """The job's status (as `Job.status()` shows it), now or as it was at `as_of`;
        reflecting at least every write up to log position `min_position`."""
        ...

    def list(
        self,
        tenant_id: str | None,
        filters: JobFilters,
        limit: int,
        cursor: str | None,
        min_position: int | None = None,
    ) -> Page:
        """Jobs matching `filters`, oldest first; `next_cursor` is None on the last page."""
        ...

    def events(self, tenant_id: str | None, job_id: UUID) -> Rows:
        """The job's timeline entries, oldest first."""
        ...

    def receipt(self, tenant_id: str | None, job_id: UUID) -> dict[str, Any]:
        """The job's receipt (`ledger.receipt.build_receipt`)."""
        ...


def encode_cursor(position: int) -> str:
    return base64.urlsafe_b64encode(f"log:{position}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidCursor("is not a cursor this API returned (pass next_cursor as is)") from None
    match = _CURSOR.match(raw)
    if match is None or encode_cursor(int(match.group(1))) != cursor:
        raise InvalidCursor("is not a cursor this API returned (pass next_cursor as is)")
    return int(match.group(1))


class AggregateJobReads:
    """`JobReads` from the aggregates (replaced by the job-status projection in a later issue)."""

    def __init__(self, ledger: JobLedger, *, scan_batch: int = SCAN_BATCH) -> None:
        self.ledger = ledger
        self.scan_batch = scan_batch

    def get(
        self,
        tenant_id: str | None,
        job_id: UUID,
        as_of: datetime | None = None,
        min_position: int | None = None,
    ) -> dict[str, Any]:
        job = self._job(tenant_id, job_id)  # always current: min_position holds by itself
        if as_of is None:
            return job.status()
        past = self.ledger.get_job(job_id, as_of=as_of)  # JobNotFound before its creation
        if not isinstance(past, Job):  # pragma: no cover - _job() checked the kind
            raise JobNotFound(job_id)
        return past.status()

    def list(
        self,
        tenant_id: str | None,
        filters: JobFilters,
        limit: int,
        cursor: str | None,
        min_position: int | None = None,
    ) -> Page:
        start = decode_cursor(cursor) if cursor is not None else 0
        items: Rows = []
        last_position = start
        while True:
            with store_errors():
                batch = self.ledger.recorder.select_notifications(
                    start, self.scan_batch, topics=[Job.JobCreated.TOPIC], inclusive_of_start=False
                )
            for notification in batch:
                created: Any = self.ledger.mapper.to_domain_event(notification)
                if tenant_id is not None and created.tenant_id != tenant_id:
                    continue
                if not filters.admits_creation(created):
                    continue
                job = self.ledger.get_job(created.originator_id)
                if filters.state is not None and str(job.state) != filters.state:
                    continue
                if len(items) == limit:  # one more match exists: there is a next page
                    return Page(items, encode_cursor(last_position))
                items.append(job.status())
                last_position = notification.id
            if len(batch) < self.scan_batch:
                return Page(items, None)
            start = batch[-1].id

    def events(self, tenant_id: str | None, job_id: UUID) -> Rows:
        self._job(tenant_id, job_id)
        return [timeline_entry(e) for e in self.ledger.job_events(job_id)]

    def receipt(self, tenant_id: str | None, job_id: UUID) -> dict[str, Any]:
        job = self._job(tenant_id, job_id)
        events = [e for e in self.ledger.job_events(job_id) if e.originator_version <= job.version]
        return build_receipt(job, events)

    def _job(self, tenant_id: str | None, job_id: UUID) -> Job:
        if job_id == CHECKPOINT_LOG_ID:  # the audit checkpoints' log is not a job
            raise JobNotFound(job_id)
        job = self.ledger.get_job(job_id)  # JobNotFound also for a tenant's or a key's id
        if tenant_id is not None and job.tenant_id != tenant_id:
            raise JobNotFound(job_id)
        return job


class ProjectionJobReads(AggregateJobReads):
    """`JobReads` for status and lists from the `job_status` projection (indexed rows, the
    status JSON returned as stored); `as_of`, timelines and receipts still come from the log.

    Read-your-writes: a client passes the `Ledger-Position` of its write as `min_position`; the
    read waits (at most `wait_seconds`) until the projection has applied it. A `get` whose row is
    missing (not projected yet) or still behind after the wait answers from the aggregate, so
    it is never stale and never a false 404.
    """

    def __init__(
        self,
        ledger: JobLedger,
        store: SqlStore,
        waiter: PositionWaiter,
        *,
        wait_seconds: float = 5.0,
        strong: bool = False,
        docs: DocCache | None = None,
    ) -> None:
        super().__init__(ledger)
        self.store = store
        self.waiter = waiter
        self.docs = docs  # status documents kept in memory (`projections.doc_cache`)
        self.wait_seconds = wait_seconds
        self.strong = strong  # every read waits for the log's end as of its start

    def get(
        self,
        tenant_id: str | None,
        job_id: UUID,
        as_of: datetime | None = None,
        min_position: int | None = None,
    ) -> dict[str, Any]:
        if as_of is not None or not self._caught_up(min_position):
            return super().get(tenant_id, job_id, as_of)
        with self.store.transaction() as tx:
            doc = get_doc(tx, tenant_id, job_id)
        if doc is None:
            return super().get(tenant_id, job_id)
        status: dict[str, Any] = orjson.loads(doc)
        return status

    def list(
        self,
        tenant_id: str | None,
        filters: JobFilters,
        limit: int,
        cursor: str | None,
        min_position: int | None = None,
    ) -> Page:
        after = decode_cursor(cursor) if cursor is not None else 0
        self._caught_up(min_position)  # best effort: a list has no fresher source
        with self.store.transaction() as tx:
            page = list_docs(tx, tenant_id, filters, limit=limit, after_position=after)
        last = page.last_position
        return Page(
            [orjson.loads(d) for d in page.docs], encode_cursor(last) if last is not None else None
        )

    def fresh(self, min_position: int | None) -> bool:
        """Whether a read now already reflects `min_position`, without waiting (no I/O)."""
        return fresh(self.waiter, min_position, strong=self.strong)

    def _caught_up(self, min_position: int | None) -> bool:
        return caught_up(
            self.waiter,
            self.ledger,
            min_position,
            strong=self.strong,
            wait_seconds=self.wait_seconds,
        )


class StatusDocs:
    """The common status read (`GET /v1/jobs/{id}`, no `as_of`, nothing to wait for) on the
    event loop: one `job_status` row through an async psycopg pool, its stored JSON text
    returned as is (PostgreSQL only; `ProjectionJobReads` answers everything else).

    `get` answers None whenever this path cannot answer for sure (row missing, store error,
    breaker open, pool busy for `ACQUIRE_WAIT_SECONDS`): the caller then takes the threaded
    `ProjectionJobReads.get`, which falls back to the aggregate and maps an unreachable store
    to 503 exactly as before. Nothing here blocks the loop (the breaker's probes run there).
    """

    def __init__(self, reads: ProjectionJobReads, *, size: int = STATUS_POOL_SIZE) -> None:
        self.reads = reads
        self.rows = AsyncRows(
            reads.store.database, size=size, application_name="job-ledger-status-reads"
        )

    async def open(self) -> None:
        await self.rows.open()

    async def close(self) -> None:
        await self.rows.close()

    async def get(
        self, tenant_id: str | None, job_id: UUID, min_position: int | None
    ) -> str | None:
        """The job's stored status JSON, or None: answer through `ProjectionJobReads.get`."""
        if job_id == CHECKPOINT_LOG_ID:
            return None
        if not self.reads.fresh(min_position):
            return None  # read-your-writes: the threaded path waits for the projection
        docs = self.reads.docs
        if docs is not None:
            doc = docs.get(job_id, tenant_id, min_position)
            if doc is not None:
                return doc
        sql, params = doc_query(tenant_id, job_id)  # another tenant's job: no row, a 404
        row = await self.rows.fetch_one(sql.replace("?", "%s"), params)
        if row is None:
            return None
        if docs is not None and row[2] is not None:
            docs.fill(job_id, str(row[1]), str(row[0]), int(row[2]))
        return str(row[0])

    async def list(
        self,
        tenant_id: str | None,
        filters: JobFilters,
        limit: int,
        cursor: str | None,
        min_position: int | None,
    ) -> bytes | None:
        """The body of `GET /v1/jobs` (the page's stored status JSON, spliced in as is: the
        bytes `json_response` makes of `ProjectionJobReads.list`'s page), or None: answer
        through that. In a worker thread each, 32 clients' lists took about 1.5 ms of the
        API's CPU apiece on a slow 2-core machine, three times a status read."""
        after = decode_cursor(cursor) if cursor is not None else 0  # (a bad one: 400)
        if not self.reads.fresh(min_position):
            return None  # read-your-writes: the threaded path waits for the projection
        sql, params = list_query(tenant_id, filters, limit=limit, after_position=after)
        return await body_on_loop(self.rows, "jobs", sql, params, limit)


async def body_on_loop(
    rows: AsyncRows, key: str, sql: str, params: Sequence[Any], limit: int
) -> bytes | None:
    """The body of a list page (`page_body`) read on the event loop with `sql` (`?`
    placeholders, `LIMIT limit + 1`), or None when that path cannot answer (`AsyncRows`)."""
    found = await rows.fetch_all(sql.replace("?", "%s"), params)
    if found is None:
        return None
    page = page_of(found, limit)
    return page_body(key, page.docs, page.last_position)


def page_body(key: str, docs: Sequence[str], last_position: int | None) -> bytes:
    """The JSON body of a list page, `{key: [docs], "next_cursor": ...}`, with the read
    model's stored JSON documents spliced in as they are: the bytes `json_response` makes of
    the page with each document parsed (the documents are orjson's compact output)."""
    next_cursor = encode_cursor(last_position) if last_position is not None else None
    return b"".join(
        (
            b'{"',
            key.encode(),
            b'":[',
            ",".join(docs).encode(),
            b'],"next_cursor":',
            orjson.dumps(next_cursor),
            b"}",
        )
    )


def fresh(waiter: PositionWaiter, min_position: int | None, *, strong: bool) -> bool:
    """Whether a read of the view `waiter` follows already reflects `min_position`, without
    waiting (no I/O); never under `strong`, whose reads wait for the log's end."""
    if strong:
        return False
    return not min_position or waiter.reached(min_position)


def caught_up(
    waiter: PositionWaiter,
    ledger: JobLedger,
    min_position: int | None,
    *,
    strong: bool,
    wait_seconds: float,
) -> bool:
    """Wait (bounded) until the view has applied `min_position` (strong: the log's end).

    A position past the log's end cannot have come from a write, so the wait is for the end
    instead: a made-up position never costs the full `wait_seconds`."""
    if not min_position and not strong:
        return True
    if min_position and waiter.reached(min_position):
        return True
    with store_errors():
        head = ledger.recorder.max_notification_id() or 0
    target = min(min_position, head) if min_position else head
    if target <= 0:
        return True
    return waiter.wait(target, wait_seconds)
