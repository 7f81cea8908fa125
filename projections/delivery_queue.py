"""The delivery-queue read model (SPEC section 7): one row per webhook delivery.

Senders find due work here (`state = 'pending' AND next_attempt_at <= now`, indexed); the API
lists an endpoint's deliveries, dead letters and what `recover` should redeliver from it. Rows
are derived only from `Delivery` events (each applied to the delivery as it was just before it),
so a rebuild gives the same rows. `doc` is the delivery as the API shows it, without its body.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson

from ledger.application import JobLedger
from ledger.delivery import Delivery, DeliveryState
from projections.aggregate_cache import AggregateCache
from projections.counts import Moves, create_counts_table
from projections.pages import Page, page_of
from storage.sql import SqlStore, Tx, utc_text

DELIVERY_TOPICS = frozenset(
    cls.TOPIC
    for cls in (
        Delivery.DeliveryCreated,
        Delivery.DeliveryAttempted,
        Delivery.DeliveryHeld,
        Delivery.DeliveryRetryRequested,
    )
)
COLUMNS = (
    "delivery_id",
    "tenant_id",
    "endpoint_id",
    "event_type",
    "origin",
    "job_id",
    "state",
    "attempts",
    "next_attempt_at",
    "created_at",
    "updated_at",
    "last_attempt_at",
    "last_status_code",
    "version",
    "position",
    "created_position",
    "doc",
)
KEEP_ON_UPDATE = frozenset({"delivery_id", "created_position"})


def _is_at_rest(delivery: Delivery) -> bool:
    """Succeeded, failed, dead-lettered or held: only a person (or an endpoint's re-enabling)
    moves it again."""
    return delivery.state is not DeliveryState.PENDING


# The running counts' key (`delivery_queue_counts`, `delivery_counts`).
COUNT_KEYS = ("endpoint_id", "state")


def _count_key(delivery: Delivery) -> tuple[str, str]:
    return delivery.endpoint_id, str(delivery.state)


class DeliveryQueueProjection:
    def __init__(
        self, ledger: JobLedger, *, table: str = "delivery_queue", cache_size: int = 10_000
    ) -> None:
        self.table = table
        self.name = table
        self.counts_table = f"{table}_counts"
        self.tables = (table, self.counts_table)
        self.topics = DELIVERY_TOPICS
        self._cache = AggregateCache(ledger, size=cache_size, settled=_is_at_rest)
        # (delivery id, version) of the rows the last batch left pending: what the sender in
        # this process may have to look at (`DeliveryRole`)
        self.pending: list[tuple[str, int]] = []

    def create_tables(self, tx: Tx) -> None:
        t = self.table
        tx.execute(
            f"CREATE TABLE IF NOT EXISTS {t} ("
            "delivery_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, endpoint_id TEXT NOT NULL, "
            "event_type TEXT NOT NULL, origin TEXT NOT NULL, job_id TEXT, state TEXT NOT NULL, "
            "attempts INTEGER NOT NULL, next_attempt_at TEXT, created_at TEXT NOT NULL, "
            "updated_at TEXT NOT NULL, last_attempt_at TEXT, last_status_code INTEGER, "
            "version INTEGER NOT NULL, position BIGINT NOT NULL, "
            "created_position BIGINT NOT NULL, doc TEXT NOT NULL)"
        )
        for name, cols in (
            ("due", "state, next_attempt_at"),
            # the lists (`list_deliveries`): an admin's, a tenant's, a tenant's by state
            ("created", "created_position"),
            ("tenant_created", "tenant_id, created_position"),
            ("tenant_state", "tenant_id, state, created_position"),
            ("endpoint", "endpoint_id, created_position"),
            ("endpoint_state", "endpoint_id, state, created_position"),
            ("job", "job_id"),
        ):
            tx.execute(f"CREATE INDEX IF NOT EXISTS {t}_{name} ON {t} ({cols})")
        create_counts_table(tx, self.counts_table, COUNT_KEYS, "deliveries", t)

    def drop_tables(self, tx: Tx) -> None:
        for table in self.tables:
            tx.execute(f"DROP TABLE IF EXISTS {table}")

    def forget(self) -> None:
        self._cache.clear()

    def prepare(self, store: SqlStore, events: Sequence[tuple[int, Any]]) -> None:
        """Before the view's transaction (the runner calls it): load the deliveries the batch
        needs, so `apply` never reads the ledger while holding SQLite's write lock."""
        self._cache.preload(event for _, event in events)

    def apply(self, tx: Tx, events: Sequence[tuple[int, Any]]) -> None:
        changed: dict[UUID, tuple[Delivery, int]] = {}
        created: dict[UUID, int] = {}
        moves = Moves(_count_key)
        for position, event in events:
            delivery: Delivery = self._cache.apply(event, moves.leave)
            moves.enter(delivery)
            changed[delivery.id] = (delivery, position)
            if event.originator_version == 1:
                created[delivery.id] = position
        rows = [_row(d, position, created.get(d.id, 0)) for d, position in changed.values()]
        tx.upsert_many(self.table, COLUMNS, rows, key=("delivery_id",), keep=KEEP_ON_UPDATE)
        moves.write(tx, self.counts_table, COUNT_KEYS, "deliveries")
        self.pending = [
            (str(d.id), d.version) for d, _ in changed.values() if d.state == DeliveryState.PENDING
        ]


def _row(delivery: Delivery, position: int, created_position: int) -> tuple[Any, ...]:
    last = delivery.last_attempt or {}
    return (
        str(delivery.id),
        delivery.tenant_id,
        delivery.endpoint_id,
        delivery.event_type,
        delivery.origin,
        delivery.job_id,
        str(delivery.state),
        delivery.attempts,
        utc_text(delivery.next_attempt_at),
        utc_text(delivery.created_at),
        utc_text(delivery.updated_at),
        last.get("attempted_at"),
        last.get("status_code"),
        delivery.version,
        position,
        created_position,
        orjson.dumps(delivery.describe()).decode(),
    )


# -- queries --


def list_deliveries(
    tx: Tx,
    *,
    endpoint_id: str | None = None,
    tenant_id: str | None = None,
    states: Sequence[str] = (),
    job_id: str | None = None,
    created_since: datetime | None = None,
    limit: int = 100,
    after_position: int = 0,
    table: str = "delivery_queue",
) -> Page:
    """Oldest first (creation order); `after_position` continues a previous page."""
    sql, params = list_query(
        endpoint_id=endpoint_id,
        tenant_id=tenant_id,
        states=states,
        job_id=job_id,
        created_since=created_since,
        limit=limit,
        after_position=after_position,
        table=table,
    )
    return page_of(tx.execute(sql, params).fetchall(), limit)


def list_query(
    *,
    endpoint_id: str | None = None,
    tenant_id: str | None = None,
    states: Sequence[str] = (),
    job_id: str | None = None,
    created_since: datetime | None = None,
    limit: int = 100,
    after_position: int = 0,
    table: str = "delivery_queue",
) -> tuple[str, list[Any]]:
    """The SQL (`?` placeholders) and parameters of `list_deliveries`'s read, whose rows
    `page_of` makes a page of."""
    where = ["created_position > ?"]
    params: list[Any] = [after_position]
    for column, value in (("endpoint_id", endpoint_id), ("tenant_id", tenant_id)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if job_id is not None:
        where.append("job_id = ?")
        params.append(job_id)
    if states:
        where.append(f"state IN ({', '.join('?' for _ in states)})")
        params.extend(states)
    if created_since is not None:
        where.append("created_at >= ?")
        params.append(utc_text(created_since))
    sql = (
        f"SELECT doc, created_position FROM {table} WHERE {' AND '.join(where)} "
        "ORDER BY created_position LIMIT ?"
    )
    params.append(limit + 1)  # one more: whether a next page follows
    return sql, params


def delivery_counts(tx: Tx, table: str = "delivery_queue") -> list[tuple[str, str, int]]:
    """(endpoint_id, state, count) for /metrics, from the running counts (counting the
    queue's rows read every delivery ever made at every scrape)."""
    rows = tx.execute(
        f"SELECT endpoint_id, state, deliveries FROM {table}_counts ORDER BY endpoint_id, state"
    ).fetchall()  # (only those not zero are kept)
    return [(str(e), str(s), int(n)) for e, s, n in rows]
