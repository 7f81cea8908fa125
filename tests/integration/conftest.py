"""Fixtures of the integration tests (beside tests/conftest.py's)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jobledger.bootstrap import Service, build
from jobledger.settings import Settings
from storage.sql import SqlStore


@pytest.fixture
def store(service) -> Iterator[SqlStore]:
    """A `SqlStore` on the test's service database (the read models' and the worker's tables)."""
    s = SqlStore(service.database)
    yield s
    s.close()


@pytest.fixture
def postgres_service(postgres_url: str) -> Iterator[Service]:
    """The service on PostgreSQL alone, with the default settings (tests of PostgreSQL-only
    behaviour: advisory locks, several writers at once)."""
    built = build(Settings(database_url=postgres_url))
    yield built
    built.close()
