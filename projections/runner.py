"""`ProjectionRunner`: follows the ledger's notification log and keeps one projection's rows in
step with it.

Each batch (up to `batch_size` log entries) is applied in ONE transaction together with the
projection's tracking position, which is advanced with a compare-and-set
(`UPDATE ... WHERE position = <what we read>`). So a crash anywhere leaves rows and position
consistent (nothing applied twice, nothing skipped), and a second runner of the same projection
cannot interleave: its compare-and-set fails and its transaction rolls back (`LostOwnership`).
On PostgreSQL the runners of one projection also elect a single owner with an advisory lock, so
a standby simply waits. Events a projection does not care about still advance its position.

Wake-ups: the ledger calls `notify()` after every save in this process; on PostgreSQL a
LISTEN connection on the ledger's NOTIFY channel wakes runners in other processes. A slow
fallback poll (`poll_seconds`) covers anything missed.

This module must never import the web layer or the delivery package.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from ledger.application import JobLedger
from storage.sql import SqlStore, Tx, utc_text

log = logging.getLogger("jobledger.projections")

TRACKING_TABLE = "projection_tracking"


class LostOwnership(RuntimeError):
    """Another runner advanced this projection first; this batch was rolled back."""


class Projection(Protocol):
    name: str
    topics: frozenset[str]

    def create_tables(self, tx: Tx) -> None: ...
    def drop_tables(self, tx: Tx) -> None: ...
    def apply(self, tx: Tx, events: Sequence[tuple[int, Any]]) -> None: ...
    def forget(self) -> None:
        """Drop in-memory caches (after a rolled-back batch)."""


def create_tracking_table(tx: Tx) -> None:
    tx.execute(
        f"CREATE TABLE IF NOT EXISTS {TRACKING_TABLE} ("
        "name TEXT PRIMARY KEY, position BIGINT NOT NULL, updated_at TEXT NOT NULL)"
    )


def tracked_position(store: SqlStore, name: str) -> tuple[int, str | None]:
    with store.transaction() as tx:
        row = tx.execute(
            f"SELECT position, updated_at FROM {TRACKING_TABLE} WHERE name = ?", (name,)
        ).fetchone()
    return (int(row[0]), row[1]) if row else (0, None)


def advisory_key(schema: str, name: str) -> int:
    digest = hashlib.sha256(f"projection:{schema}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class ProjectionRunner:
    def __init__(
        self,
        ledger: JobLedger,
        store: SqlStore,
        projection: Projection,
        *,
        batch_size: int = 500,
        poll_seconds: float = 1.0,
    ) -> None:
        self.ledger = ledger
        self.store = store
        self.projection = projection
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self._wake = threading.Event()
        self._position: int | None = None
        self.position_changed: list[Callable[[int], None]] = []

    @property
    def name(self) -> str:
        return self.projection.name

    # -- set-up --

    def setup(self) -> None:
        with self.store.transaction() as tx:
            create_tracking_table(tx)
            self.projection.create_tables(tx)
            tx.execute(
                f"INSERT INTO {TRACKING_TABLE} (name, position, updated_at) VALUES (?, 0, ?) "
                "ON CONFLICT (name) DO NOTHING",
                (self.projection.name, utc_text(datetime.now(UTC))),
            )

    # -- running --

    def notify(self, position: int = 0) -> None:
        self._wake.set()

    def position(self) -> int:
        return tracked_position(self.store, self.projection.name)[0]

    def run_once(self) -> int:
        """Apply the next batch; returns how many log entries it covered (0: caught up)."""
        start = self._position if self._position is not None else self.position()
        notes = self.ledger.recorder.select_notifications(
            start, self.batch_size, inclusive_of_start=False
        )
        if not notes:
            self._position = start
            return 0
        topics = self.projection.topics
        events = [(n.id, self.ledger.mapper.to_domain_event(n)) for n in notes if n.topic in topics]
        end = notes[-1].id
        prepare = getattr(self.projection, "prepare", None)
        try:
            if prepare is not None:  # work outside the view's transaction (see DeliveryFanout)
                prepare(self.store, events)
            with self.store.transaction() as tx:
                moved = tx.execute(
                    f"UPDATE {TRACKING_TABLE} SET position = ?, updated_at = ? "
                    "WHERE name = ? AND position = ?",
                    (end, utc_text(datetime.now(UTC)), self.projection.name, start),
                )
                if moved.rowcount != 1:
                    raise LostOwnership(self.projection.name)
                self.projection.apply(tx, events)
        except BaseException:
            self._position = None
            self.projection.forget()
            raise
        self._position = end
        for callback in self.position_changed:
            callback(end)
        return len(notes)

    def catch_up(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Apply batches until the log's end as it was when called; returns entries applied."""
        target = self.ledger.recorder.max_notification_id() or 0
        done = 0
        while True:
            applied = self.run_once()
            done += applied
            if progress is not None and self._position is not None:
                progress(self._position, target)
            if applied == 0 or (self._position or 0) >= target:
                return done

    def run_forever(self, stop: threading.Event, *, listen: bool = True) -> None:
        """Follow the log until `stop` is set; on PostgreSQL only while owning the projection.

        `listen=False` when the caller runs one `LogListener` for all its runners instead."""
        listener = (
            LogListener(self.store, self._wake.set, stop)
            if listen and self.store.is_postgres
            else None
        )
        if listener is not None:
            listener.start()
        try:
            with _Ownership(self.store, self.projection.name, stop) as owned:
                if not owned:
                    return
                while not stop.is_set():
                    try:
                        if self.run_once() >= self.batch_size:
                            continue
                    except LostOwnership:
                        log.warning("projection %s: another runner moved first", self.name)
                    except Exception:
                        log.exception("projection %s: batch failed; retrying", self.name)
                        stop.wait(self.poll_seconds)
                    self._wake.wait(self.poll_seconds)
                    self._wake.clear()
        finally:
            if listener is not None:
                listener.join(timeout=5)


class _Ownership:
    """PostgreSQL: hold an advisory lock for this projection while running (waits as standby)."""

    def __init__(self, store: SqlStore, name: str, stop: threading.Event) -> None:
        self.store = store
        self.key = advisory_key(store.database.schema, name)
        self.stop = stop
        self.conn: Any = None

    def __enter__(self) -> bool:
        if not self.store.is_postgres:
            return True
        while not self.stop.is_set():
            try:
                self.conn = self.store.database.connect()
                got = self.conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
                if got and got[0]:
                    return True
                self.conn.close()
                self.conn = None
            except Exception:
                log.exception("projection ownership: cannot reach PostgreSQL")
            self.stop.wait(2.0)
        return False

    def __exit__(self, *exc: object) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):  # already gone is fine too
                self.conn.close()  # releases the advisory lock


class LogListener(threading.Thread):
    """LISTEN on the ledger's NOTIFY channel so saves in other processes wake runners (one
    connection per process is enough: `wake` may wake them all)."""

    CHANNEL = "ledger_events"
    STOP_CHECK_SECONDS = 0.1  # how soon a stop is noticed (psycopg cannot interrupt notifies)

    def __init__(self, store: SqlStore, wake: Callable[[], None], stop: threading.Event) -> None:
        super().__init__(name="projection-listen", daemon=True)
        self.store = store
        self.wake = wake
        self.stop = stop

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                conn = self.store.database.connect()
                with conn:
                    conn.execute(f"LISTEN {self.CHANNEL}")
                    while not self.stop.is_set():
                        for _ in conn.notifies(timeout=self.STOP_CHECK_SECONDS):
                            self.wake()
            except Exception:
                log.warning("projection listener lost its connection; reconnecting")
                self.stop.wait(1.0)


def rebuild(
    ledger: JobLedger,
    store: SqlStore,
    live: Projection,
    shadow: Projection,
    *,
    progress: Callable[[int, int], None] | None = None,
    batch_size: int = 2000,
) -> int:
    """Rebuild `live` from an empty view: fill `shadow` from the start of the log, then replace
    the live rows and position with the shadow's in one transaction. A live runner meanwhile
    loses its compare-and-set once, re-reads the position and carries on from there.
    Returns the position the rebuilt view stands at."""
    with store.transaction() as tx:
        shadow.drop_tables(tx)
        create_tracking_table(tx)
        tx.execute(f"DELETE FROM {TRACKING_TABLE} WHERE name = ?", (shadow.name,))
    runner = ProjectionRunner(ledger, store, shadow, batch_size=batch_size)
    runner.setup()
    runner.catch_up(progress)
    position = runner.position()
    with store.transaction() as tx:
        live.create_tables(tx)
        for live_table, shadow_table in zip(_tables(live), _tables(shadow), strict=True):
            tx.execute(f"DELETE FROM {live_table}")
            tx.execute(f"INSERT INTO {live_table} SELECT * FROM {shadow_table}")
        now = utc_text(datetime.now(UTC))
        tx.execute(
            f"INSERT INTO {TRACKING_TABLE} (name, position, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET position = excluded.position, "
            "updated_at = excluded.updated_at",
            (live.name, position, now),
        )
        shadow.drop_tables(tx)
        tx.execute(f"DELETE FROM {TRACKING_TABLE} WHERE name = ?", (shadow.name,))
    live.forget()
    return position


def _tables(projection: Projection) -> tuple[str, ...]:
    tables = getattr(projection, "tables", None)
    return tuple(tables) if tables else (str(getattr(projection, "table", projection.name)),)


class PositionWaiter:
    """Lets a reader wait (bounded) until a projection has applied a given log position:
    read-your-writes for a client that just wrote. Fed by `ProjectionRunner.position_changed`
    in this process; falls back to reading the tracking row (another process's runner)."""

    def __init__(self, store: SqlStore, name: str, *, poll_seconds: float = 0.02) -> None:
        self.store = store
        self.name = name
        self.poll_seconds = poll_seconds
        self._position = 0
        self._changed = threading.Condition()

    def advanced(self, position: int) -> None:
        with self._changed:
            if position > self._position:
                self._position = position
                self._changed.notify_all()

    def reached(self, position: int) -> bool:
        """Known (in this process) to have applied `position`, without asking the store."""
        with self._changed:
            return self._position >= position

    def wait(self, position: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            with self._changed:
                if self._position >= position:
                    return True
            self.advanced(tracked_position(self.store, self.name)[0])
            remaining = deadline - time.monotonic()
            if self._position >= position:
                return True
            if remaining <= 0:
                return False
            with self._changed:
                self._changed.wait(min(remaining, self.poll_seconds * 10))
