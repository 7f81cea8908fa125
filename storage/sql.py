"""Plain SQL for the edges' own tables (projections, queues), on SQLite and PostgreSQL alike.

Queries are written once with `?` placeholders; `SqlStore` turns them into `%s` for psycopg.
Timestamps are stored as fixed-width UTC text (`2026-11-23T10:00:00.000000Z`), which sorts the
same way on both stores. Connections come from a small pool; `transaction()` commits on success
and rolls back on any error, so rows and tracking positions are written together or not at all.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from ledger.errors import StoreUnavailable
from storage.config import PING_AFTER_IDLE_SECONDS, Database


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


def utc_text(value: datetime | None) -> str | None:
    """The stored form of a time: `2026-11-23T10:00:00.000000Z` (naive: taken as local)."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    if value.year < 1000:  # (orjson pads the year to four digits, strftime does not)
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # orjson, not strftime: a fifth of its time, and views write several times per row
    return utc_texts(value)[1]


def utc_texts(value: datetime) -> tuple[str, str]:
    """(RFC 3339 with `Z`, as `ledger.clock.iso_z` writes it; `utc_text`) of a UTC time from
    the year 1000 on, from one formatting by orjson (a view writing both, `job_status`)."""
    text = orjson.dumps(value, option=orjson.OPT_UTC_Z)[1:-1].decode()
    return text, text if value.microsecond else f"{text[:-1]}.000000Z"


def parse_utc_text(value: str | None) -> datetime | None:
    """The time `utc_text` stored."""
    if value is None:
        return None
    if len(value) == UTC_TEXT_LENGTH and value[-1] == "Z":
        return datetime.fromisoformat(value)  # a thirtieth of strptime's time
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


UTC_TEXT_LENGTH = len("2026-11-23T10:00:00.000000Z")


CREATE_IF_MISSING = re.compile(r"CREATE (?:TABLE|INDEX) IF NOT EXISTS (\w+)")


def _created_relation(sql: str) -> str | None:
    """The table or index a `CREATE TABLE|INDEX IF NOT EXISTS <name>` statement makes."""
    match = CREATE_IF_MISSING.match(sql)
    return match.group(1) if match else None


log = logging.getLogger("jobledger.storage")


class Tx:
    """One open transaction; `execute` takes `?` placeholders on both stores."""

    def __init__(
        self,
        raw: Any,
        is_postgres: bool,
        column_types: ColumnTypes,
        copy_refused: set[str] | None = None,
    ) -> None:
        self.raw = raw
        self.is_postgres = is_postgres
        # PostgreSQL: table -> column -> SQL type, shared by the store's transactions
        self._column_types = column_types
        # PostgreSQL: tables whose COPY met a key already there (`insert_many`), likewise
        self._copy_refused = copy_refused if copy_refused is not None else set()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        if self.is_postgres:
            created = _created_relation(sql)
            if created is not None:
                # `CREATE ... IF NOT EXISTS` of something that exists, skipped after a catalog
                # read that locks nothing: PostgreSQL takes the table's SHARE lock for
                # `CREATE INDEX IF NOT EXISTS` before it sees the index is there, and held in
                # a start-up transaction while the running processes write that table, that
                # lock deadlocked with them (every restart of a role in the crash matrix).
                cursor: Cursor = self.raw.execute(
                    "SELECT 1 WHERE to_regclass(%s) IS NULL", (created,)
                )
                if cursor.fetchone() is None:
                    return cursor
            if sql.startswith(CHANGES_COLUMNS):
                self._column_types.clear()  # a table dropped, renamed or altered
            sql = sql.replace("?", "%s")
        cursor = self.raw.execute(sql, tuple(params))
        return cursor

    def table_exists(self, table: str) -> bool:
        if self.is_postgres:
            found = self.raw.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
            return bool(found and found[0])
        return (
            self.raw.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
            ).fetchone()
            is not None
        )

    def rows_where_in(self, select: str, column: str, values: Collection[Any]) -> list[Any]:
        """The rows of `select` (`SELECT ... FROM t`) whose `column` is one of `values`.

        On PostgreSQL one statement that the server plans for these values and the table as
        it is now. Prepared, it kept the plan it got while its table was nearly empty, a full
        scan: a view's lookup of 30 new keys took 5-10 ms of the server's CPU at 20k rows,
        against 0.2 ms now (planning included)."""
        if not values:
            return []
        if self.is_postgres:
            return list(
                self.raw.execute(
                    f"{select} WHERE {column} = ANY(%s)", (list(values),), prepare=False
                ).fetchall()
            )
        found: list[Any] = []
        items = list(values)
        for start in range(0, len(items), SQLITE_IN_CHUNK):
            chunk = items[start : start + SQLITE_IN_CHUNK]
            found += self.raw.execute(
                f"{select} WHERE {column} IN ({', '.join('?' for _ in chunk)})", chunk
            ).fetchall()
        return found

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        if self.is_postgres:
            if len(rows) == 1:  # psycopg's pipeline for one row: about 1.5x a plain execute
                self.raw.execute(sql.replace("?", "%s"), rows[0])
                return
            with self.raw.cursor() as cur:
                cur.executemany(sql.replace("?", "%s"), rows)
        else:
            self.raw.executemany(sql, rows)

    def upsert(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        *,
        key: Sequence[str],
        keep: Collection[str] = (),
    ) -> None:
        """Insert `rows`; where `key` exists, overwrite every column but the key and `keep`."""
        updates = ", ".join(
            f"{c} = excluded.{c}" for c in columns if c not in key and c not in keep
        )
        self.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' for _ in columns)}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}",
            rows,
        )

    def upsert_many(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        *,
        key: Sequence[str],
        keep: Collection[str] = (),
    ) -> None:
        """`upsert` for large batches. Same outcome as upserting the rows one after another
        (rows sharing a key: `keep` columns from the first, the rest from the last); on
        PostgreSQL, from `BULK_ROWS` rows on, one INSERT ... SELECT FROM unnest(one array per
        column) ... ON CONFLICT instead of a statement per row.

        Measured against the COPY into a temporary table it replaces (PostgreSQL 15, 15-column
        rows, half of them updates), the server's CPU per row: 10-21 us against 31-42 at 64
        rows, 10 against 13-17 at 200, 9.3 against 8.7-9.0 at 2,000. And no table is made and
        dropped per batch: each of those wrote and deleted catalog rows, and every connection
        of the server then read the invalidations."""
        if not self.is_postgres or len(rows) < BULK_ROWS:
            self.upsert(table, columns, rows, key=key, keep=keep)
            return
        rows = _last_per_key(columns, rows, key, keep)  # (a statement may touch a row once)
        updates = ", ".join(
            f"{c} = excluded.{c}" for c in columns if c not in key and c not in keep
        )
        arrays = ", ".join(f"%b::{t}[]" for t in self._types(table, columns))
        self.raw.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM unnest({arrays}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}",
            [list(values) for values in zip(*rows, strict=True)],
        )

    def _types(self, table: str, columns: Sequence[str]) -> list[str]:
        """The SQL types of `columns` of `table`, read from the catalog once per table (and
        again after a statement that may change them, `CHANGES_COLUMNS`)."""
        known = self._column_types.get(table)
        if known is None or any(c not in known for c in columns):
            known = {
                str(name): str(sql_type)
                for name, sql_type in self.raw.execute(
                    "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
                    (table,),
                ).fetchall()
            }
            missing = [c for c in columns if c not in known]
            if missing:
                raise ValueError(f"{table} has no column(s) {', '.join(missing)}")
            self._column_types[table] = known
        return [known[c] for c in columns]

    def insert_many(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        *,
        key: Sequence[str],
        keep: Collection[str] = (),
    ) -> None:
        """`upsert_many` for rows whose keys the caller knows are not in `table` yet: on
        PostgreSQL, from `BULK_ROWS` rows on, one COPY straight into the table (half the
        server's work of an upsert).

        Should a key be there after all, the COPY fails and with it the caller's transaction
        (psycopg's UniqueViolation), and from then on this store upserts into `table`: the
        caller's next try succeeds. That takes no savepoint around every COPY: its SAVEPOINT
        and RELEASE were two of the thirty round trips of a lone API process's views' round."""
        if not self.is_postgres or len(rows) < BULK_ROWS or table in self._copy_refused:
            self.upsert_many(table, columns, rows, key=key, keep=keep)
            return
        import psycopg

        names = ", ".join(columns)
        try:
            with self.raw.cursor() as cur, cur.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        except psycopg.errors.UniqueViolation:
            log.warning("COPY into %s met a key already there: upserting into it from now", table)
            self._copy_refused.add(table)
            raise


SQLITE_IN_CHUNK = 500  # values per IN (...) (SQLite allows 32,766 parameters a statement)
# From this many rows on, `insert_many` uses COPY and `upsert_many` one statement over arrays;
# below, a pipelined statement per row. The fan-out following 12,000 new jobs in batches of 60
# (4 runs each, CPU per event): with a statement per row (a threshold of 64), 28-48 us in its
# thread and 77-124 us on the machine; with COPY (16), 16-24 us and 48-77 us. Batches of 30:
# 38-46 against 27-43 us; batches of 10 cost the same either way.
BULK_ROWS = 16
ColumnTypes = dict[str, dict[str, str]]
# Statements after which the column types read from the catalog may be out of date.
CHANGES_COLUMNS = ("DROP TABLE", "ALTER TABLE")


def _last_per_key(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    key: Sequence[str],
    keep: Collection[str],
) -> list[Sequence[Any]]:
    """One row per key, as if the rows had been upserted in order (INSERT ... ON CONFLICT DO
    UPDATE may not touch one row twice)."""
    key_at = [columns.index(c) for c in key]
    keys = [tuple(row[i] for i in key_at) for row in rows]
    if len(set(keys)) == len(rows):
        return list(rows)
    keep_at = [i for i, c in enumerate(columns) if c in keep and c not in key]
    merged: dict[tuple[Any, ...], Sequence[Any]] = {}
    for k, row in zip(keys, rows, strict=True):
        first = merged.get(k)
        if first is not None and keep_at:
            row = list(row)
            for i in keep_at:
                row[i] = first[i]
        merged[k] = row
    return list(merged.values())


class SqlStore:
    def __init__(self, database: Database, *, max_connections: int = 4) -> None:
        self.database = database
        self.is_postgres = database.is_postgres
        self._max = max_connections
        self._idle: queue.LifoQueue[tuple[Any, float]] = queue.LifoQueue()  # (raw, since)
        self._made = 0
        self._lock = threading.Lock()
        self._closed = False
        self._breaker: Any = None
        self._column_types: ColumnTypes = {}
        self._copy_refused: set[str] = set()
        if self.is_postgres:  # fail fast while the store is down (see storage/breaker.py)
            from storage.breaker import breaker_for

            self._breaker = breaker_for(
                database.host, database.port, database.dbname, database.user, database.password
            )

    def _connect(self) -> Any:
        if self.is_postgres:
            raw = self.database.connect()
            raw.autocommit = True
            return raw
        raw = sqlite3.connect(
            self.database.path, timeout=30, isolation_level=None, check_same_thread=False
        )
        raw.execute("PRAGMA journal_mode=WAL")
        raw.execute("PRAGMA synchronous=NORMAL")
        return raw

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """A pooled connection. A store that cannot be reached raises `StoreUnavailable`."""
        with self._unreachable_is_unavailable():
            raw = self._take()
        healthy = True
        try:
            with self._unreachable_is_unavailable():
                yield raw
        except BaseException:
            healthy = _still_usable(raw, self.is_postgres)
            raise
        finally:
            if healthy and not self._closed:
                self._idle.put((raw, time.monotonic()))
            else:
                with self._lock:
                    self._made -= 1
                _close_quietly(raw)

    @contextmanager
    def _unreachable_is_unavailable(self) -> Iterator[None]:
        if not self.is_postgres:
            yield
            return
        import psycopg

        try:
            yield
        except (psycopg.OperationalError, psycopg.InterfaceError) as error:
            from storage.breaker import is_outage

            if self._breaker is not None and is_outage(error):
                self._breaker.suspect()  # opens the breaker if the store is down
            raise StoreUnavailable() from error

    def _take(self) -> Any:
        if self._breaker is not None:
            self._breaker.admit()  # StoreUnavailable at once while the store is down
        while True:
            try:
                raw, since = self._idle.get_nowait()
            except queue.Empty:
                break
            if self._usable(raw, since):
                return raw
            with self._lock:
                self._made -= 1
            _close_quietly(raw)
        with self._lock:
            if self._made < self._max:
                self._made += 1
                make = True
            else:
                make = False
        if make:
            try:
                return self._connect()
            except BaseException:
                with self._lock:
                    self._made -= 1
                raise
        return self._idle.get(timeout=30)[0]

    def _usable(self, raw: Any, since: float) -> bool:
        """PostgreSQL: not broken, and answering a ping if it idled past the threshold."""
        if not self.is_postgres:
            return True
        if raw.closed or raw.broken:
            return False
        if time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return True
        try:
            raw.execute("SELECT 1")
        except Exception:
            return False
        return True

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self.connection() as raw:
            if self.is_postgres:
                with raw.transaction():
                    yield Tx(raw, True, self._column_types, self._copy_refused)
            else:
                raw.execute("BEGIN IMMEDIATE")
                try:
                    yield Tx(raw, False, self._column_types, self._copy_refused)
                except BaseException:
                    raw.execute("ROLLBACK")
                    raise
                raw.execute("COMMIT")

    @contextmanager
    def reading(self) -> Iterator[Tx]:
        """Reads without a transaction around them (PostgreSQL: no BEGIN and COMMIT round
        trips; each statement sees the data committed when it starts). For readers of rows
        nobody else writes meanwhile, or of one statement."""
        with self.connection() as raw:
            yield Tx(raw, self.is_postgres, self._column_types, self._copy_refused)

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                _close_quietly(self._idle.get_nowait()[0])
            except queue.Empty:
                return


def _still_usable(raw: Any, is_postgres: bool) -> bool:
    if is_postgres:
        return not raw.closed and not raw.broken
    return True


def _close_quietly(raw: Any) -> None:
    with contextlib.suppress(Exception):  # closing a broken connection may fail too
        raw.close()
