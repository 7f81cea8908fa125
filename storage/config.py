"""Where the ledger lives: parsing `LEDGER_DATABASE_URL`, the eventsourcing environment for it,
raw connections for the edges that keep tables of their own, and the one migration step.

Supported URLs:
- `sqlite:///relative/path.db`, `sqlite:////absolute/path.db` (the embedded default)
- `postgresql://user:password@host:port/dbname?schema=name` (`postgres://` too); `schema`
  defaults to `public`.

Tables are created once by `migrate()` (under an advisory lock on PostgreSQL, since concurrent
`CREATE TABLE IF NOT EXISTS` races there); every application afterwards starts with
`CREATE_TABLE=n`.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

# A pooled PostgreSQL connection idle this long is pinged before use: a server restart or
# pg_terminate_backend leaves dead ones behind, and one of them would otherwise fail a call.
PING_AFTER_IDLE_SECONDS = 1.0

SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
MIGRATION_LOCK_KEY = 0x4A4C_4D49  # "JLMI": one advisory lock for schema changes


class DatabaseURLError(ValueError):
    """LEDGER_DATABASE_URL is not a supported database URL."""


@dataclass(frozen=True)
class Database:
    url: str = field(repr=False)  # may hold a password: see redacted_url()
    kind: str = "sqlite"  # "sqlite" or "postgresql"
    path: str = ""
    host: str = ""
    port: int = 5432
    dbname: str = ""
    user: str = ""
    password: str = field(default="", repr=False)
    schema: str = "public"
    pool_size: int = 5
    max_overflow: int = 10
    connect_timeout: int = 5

    @property
    def is_postgres(self) -> bool:
        return self.kind == "postgresql"

    def redacted_url(self) -> str:
        if not self.is_postgres:
            return self.url
        return f"postgresql://{self.user}:***@{self.host}:{self.port}/{self.dbname}?schema={self.schema}"

    def eventsourcing_env(self, *, create_table: bool = False) -> dict[str, str]:
        env = {
            "CREATE_TABLE": "y" if create_table else "n",
            # the same stored JSON as eventsourcing's own transcoder, made and read by orjson
            "TRANSCODER_TOPIC": "storage.transcoder:OrjsonTranscoder",
        }
        if self.is_postgres:
            env.update(
                PERSISTENCE_MODULE="eventsourcing.postgres",
                POSTGRES_DBNAME=self.dbname,
                POSTGRES_HOST=self.host,
                POSTGRES_PORT=str(self.port),
                POSTGRES_USER=self.user,
                POSTGRES_PASSWORD=self.password,
                POSTGRES_SCHEMA=self.schema,
                POSTGRES_POOL_SIZE=str(self.pool_size),
                POSTGRES_MAX_OVERFLOW=str(self.max_overflow),
                POSTGRES_CONNECT_TIMEOUT=str(self.connect_timeout),
                POSTGRES_LOCK_TIMEOUT="10",
                POSTGRES_PRE_PING="y",
                POSTGRES_ENABLE_DB_FUNCTIONS="n",  # see shared EVENTSOURCING.md: it loses events
                # NOTIFY names the topics written, so runners wake only for their own
                APPLICATION_RECORDER_TOPIC="storage.recorder:TopicNotifyingRecorder",
            )
        else:
            env.update(
                PERSISTENCE_MODULE="eventsourcing.sqlite",
                SQLITE_DBNAME=self.path,
                SQLITE_LOCK_TIMEOUT="30",
                APPLICATION_RECORDER_TOPIC="storage.recorder:SQLiteRecorder",
            )
        return env

    def connect(self) -> Any:
        """A raw DB-API connection (autocommit) for the edges' own tables and for tests."""
        if self.is_postgres:
            import psycopg

            conn = psycopg.connect(
                host=self.host,
                port=self.port,
                dbname=self.dbname,
                user=self.user,
                password=self.password or None,
                connect_timeout=self.connect_timeout,
                autocommit=True,
                options=f"-c search_path={self.schema}",
            )
            return conn
        lite = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        lite.execute("PRAGMA journal_mode=WAL")
        return lite


def parse_database_url(url: str, *, pool_size: int = 5, max_overflow: int = 10) -> Database:
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        if parts.netloc:
            raise DatabaseURLError(
                f"{url!r}: a SQLite URL has no host; use sqlite:///relative.db or sqlite:////abs.db"
            )
        path = unquote(parts.path[1:]) if parts.path.startswith("/") else ""
        if not path or path.endswith("/") or ":memory:" in path:
            raise DatabaseURLError(f"{url!r}: name a database file, e.g. sqlite:///./ledger.db")
        return Database(url=url, kind="sqlite", path=path)
    if parts.scheme in ("postgresql", "postgres"):
        query = parse_qs(parts.query)
        schema = query.get("schema", ["public"])[0]
        if not SCHEMA_NAME.match(schema):
            raise DatabaseURLError(f"{url!r}: schema must match {SCHEMA_NAME.pattern}")
        dbname = unquote(parts.path.lstrip("/"))
        if not dbname:
            raise DatabaseURLError(f"{url!r}: name the database, e.g. postgresql://host/ledger")
        try:
            port = parts.port or 5432
        except ValueError:
            raise DatabaseURLError(f"{url!r}: the port is not a number") from None
        return Database(
            url=url,
            kind="postgresql",
            host=parts.hostname or "localhost",
            port=port,
            dbname=dbname,
            user=unquote(parts.username or os.environ.get("PGUSER", "postgres")),
            password=unquote(parts.password or ""),
            schema=schema,
            pool_size=pool_size,
            max_overflow=max_overflow,
        )
    raise DatabaseURLError(f"{url!r}: use sqlite:///path.db or postgresql://user@host/dbname")


@contextmanager
def migration_lock(database: Database) -> Iterator[None]:
    """Serialise schema changes across processes (PostgreSQL: an advisory lock)."""
    if not database.is_postgres:
        yield
        return
    with database.connect() as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))


def migrate(database: Database) -> None:
    """Create every table the service needs, once; safe to run from many processes at once."""
    from ledger.application import JobLedger

    if database.is_postgres:
        with migration_lock(database), database.connect() as conn:
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{database.schema}"')
            JobLedger(database.eventsourcing_env(create_table=True)).close()
    else:
        directory = os.path.dirname(os.path.abspath(database.path))
        os.makedirs(directory, exist_ok=True)
        JobLedger(database.eventsourcing_env(create_table=True)).close()
