"""Fixtures of the integration tests (beside tests/conftest.py's)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from storage.sql import SqlStore


@pytest.fixture
def store(service) -> Iterator[SqlStore]:
    """A `SqlStore` on the test's service database (the read models' and the worker's tables)."""
    s = SqlStore(service.database)
    yield s
    s.close()
