"""Shared fixtures.

- `database_url`: parametrised over `sqlite` and `postgres`; every test that takes it runs on
  both stores. PostgreSQL tests use a fresh schema each (dropped afterwards) in the database
  named by `LEDGER_TEST_DATABASE_URL` (default postgresql://postgres@127.0.0.1:5432/ledger_test).
  Without a reachable PostgreSQL they are skipped with the reason, except when `CI=true`, where
  that is an error.
- `clock`: a `ManualClock`; `service`/`ledger`: the real service built on `database_url`.
- `new_job(**overrides)`: a valid `NewJob`, with any field replaced.
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from jobledger.bootstrap import Service, build
from jobledger.settings import Settings
from jobledger.webhook_settings import WebhookSettings
from ledger.application import JobLedger
from ledger.clock import ManualClock
from ledger.request import MediaSource, NewJob, Pin
from storage.config import Database, parse_database_url

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/ledger_test"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Seals webhook endpoint secrets in tests (PostgreSQL has no key-file default).
TEST_SECRET_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`make test` runs the suite on two workers (`-n 2 --dist loadgroup`): most tests wait on
    sockets and subprocesses, so one process left a core idle. The multi-process and
    reliability tests run one after another on one worker (group `serial`), beside the rest:
    two of them at once would starve each other's processes on two cores."""
    for item in items:
        if item.get_closest_marker("slow") or item.nodeid.startswith("tests/reliability/"):
            item.add_marker(pytest.mark.xdist_group("serial"))


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees another's LEDGER_* settings, nor the developer's."""
    for name in list(os.environ):
        if name.startswith("LEDGER_") and name != "LEDGER_TEST_DATABASE_URL":
            monkeypatch.delenv(name)


def _pg_base_url() -> str:
    return os.environ.get("LEDGER_TEST_DATABASE_URL", DEFAULT_PG_URL)


@pytest.fixture(scope="session")
def postgres_database() -> Database:
    """The test database on PostgreSQL (created if missing), or a skip with the reason."""
    import psycopg

    db = parse_database_url(_pg_base_url())
    try:
        with psycopg.connect(
            host=db.host,
            port=db.port,
            user=db.user,
            dbname="postgres",
            connect_timeout=3,
            autocommit=True,
            password=db.password or None,
        ) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (db.dbname,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{db.dbname}"')
    except psycopg.OperationalError as error:
        reason = f"PostgreSQL at {db.host}:{db.port} is not reachable: {error}".strip()
        if IN_CI:
            pytest.fail(f"CI=true requires PostgreSQL: {reason}")
        pytest.skip(reason)
    return db


def fresh_postgres_url(base: Database) -> str:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    password = f":{base.password}" if base.password else ""
    return (
        f"postgresql://{base.user}{password}@{base.host}:{base.port}/{base.dbname}?schema={schema}"
    )


def drop_schema(url: str) -> None:
    db = parse_database_url(url)
    with db.connect() as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{db.schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/ledger.db"
        return
    base = request.getfixturevalue("postgres_database")
    url = fresh_postgres_url(base)
    try:
        yield url
    finally:
        drop_schema(url)


@pytest.fixture
def postgres_url(postgres_database: Database) -> Iterator[str]:
    """A fresh PostgreSQL schema, for tests that only make sense on PostgreSQL."""
    url = fresh_postgres_url(postgres_database)
    try:
        yield url
    finally:
        drop_schema(url)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def service(database_url: str, clock: ManualClock) -> Iterator[Service]:
    settings = Settings(
        database_url=database_url, webhooks=WebhookSettings(secret_key=TEST_SECRET_KEY)
    )
    svc = build(settings, clock=clock, rng=random.Random(7))
    try:
        yield svc
    finally:
        svc.close()


@pytest.fixture
def ledger(service: Service) -> JobLedger:
    return service.ledger


def make_new_job(**overrides: Any) -> NewJob:
    pin_fields: dict[str, Any] = {
        "media_source": MediaSource("image_url", "https://images.example.com/cat.png"),
        "title": "A cat",
        "description": "A very good cat.",
        "link": "https://example.com/cat",
        "alt_text": "a cat on a mat",
    }
    pin_fields.update(overrides.pop("pin", {}))
    fields: dict[str, Any] = {
        "account_id": "acct-1",
        "board_id": "board-1",
        "pin": Pin(**pin_fields),
    }
    fields.update(overrides)
    return NewJob(**fields)


@pytest.fixture
def new_job() -> Callable[..., NewJob]:
    return make_new_job
