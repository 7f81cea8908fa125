"""Plain SQL for the edges' own tables (projections, queues), on SQLite and PostgreSQL alike.

Queries are written once with `?` placeholders; `SqlStore` turns them into `%s` for psycopg.
Timestamps are stored as fixed-width UTC text (`2026-11-23T10:00:00.000000Z`), which sorts the
same way on both stores. Connections come from a small pool; `transaction()` commits on success
and rolls back on any error, so rows and tracking positions are written together or not at all.
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Protocol

from ledger.errors import StoreUnavailable
from storage.config import Database


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


def utc_text(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_utc_text(value: str | None) -> datetime | None:
    if value is None:
        return None
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


class Tx:
    """One open transaction; `execute` takes `?` placeholders on both stores."""

    def __init__(self, raw: Any, is_postgres: bool) -> None:
        self.raw = raw
        self.is_postgres = is_postgres

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        if self.is_postgres:
            sql = sql.replace("?", "%s")
        cursor: Cursor = self.raw.execute(sql, tuple(params))
        return cursor

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        if self.is_postgres:
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


class SqlStore:
    def __init__(self, database: Database, *, max_connections: int = 4) -> None:
        self.database = database
        self.is_postgres = database.is_postgres
        self._max = max_connections
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue()
        self._made = 0
        self._lock = threading.Lock()
        self._closed = False

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
                self._idle.put(raw)
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
            raise StoreUnavailable() from error

    def _take(self) -> Any:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
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
        return self._idle.get(timeout=30)

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self.connection() as raw:
            if self.is_postgres:
                with raw.transaction():
                    yield Tx(raw, True)
            else:
                raw.execute("BEGIN IMMEDIATE")
                try:
                    yield Tx(raw, False)
                except BaseException:
                    raw.execute("ROLLBACK")
                    raise
                raw.execute("COMMIT")

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                _close_quietly(self._idle.get_nowait())
            except queue.Empty:
                return


def _still_usable(raw: Any, is_postgres: bool) -> bool:
    if is_postgres:
        return not raw.closed and not raw.broken
    return True


def _close_quietly(raw: Any) -> None:
    with contextlib.suppress(Exception):  # closing a broken connection may fail too
        raw.close()
