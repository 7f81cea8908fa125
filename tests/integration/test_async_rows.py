"""`storage.async_rows.AsyncRows` on PostgreSQL: at most `size` connections, requests beyond
them wait their turn, and one that waits longer than `acquire_wait` is answered None (its
caller then takes the threaded path)."""

from __future__ import annotations

import asyncio

import pytest

from storage.async_rows import AsyncRows
from storage.config import parse_database_url

pytestmark = pytest.mark.postgres


def _rows(postgres_url: str, size: int, acquire_wait: float) -> AsyncRows:
    return AsyncRows(
        parse_database_url(postgres_url),
        size=size,
        application_name="test-async-rows",
        acquire_wait=acquire_wait,
    )


def test_requests_beyond_the_pool_wait_their_turn(postgres_url: str) -> None:
    async def run() -> list[tuple | None]:
        rows = _rows(postgres_url, 3, acquire_wait=30)
        await rows.open()
        try:
            return await asyncio.gather(
                *(
                    rows.fetch_one("SELECT pg_backend_pid() FROM pg_sleep(0.05)", ())
                    for _ in range(10)
                )
            )
        finally:
            await rows.close()

    answers = asyncio.run(run())
    assert all(answer is not None for answer in answers)
    assert 1 <= len({answer[0] for answer in answers if answer}) <= 3


def test_a_request_that_waits_too_long_for_a_connection_is_answered_none(
    postgres_url: str,
) -> None:
    async def run() -> tuple[tuple | None, tuple | None, tuple | None]:
        rows = _rows(postgres_url, 1, acquire_wait=0.05)
        await rows.open()
        try:
            slow = asyncio.ensure_future(rows.fetch_one("SELECT 1 FROM pg_sleep(1)", ()))
            await asyncio.sleep(0.2)  # the only connection is taken
            waited = await rows.fetch_one("SELECT 2", ())
            first = await slow
            after = await rows.fetch_one("SELECT 3", ())  # its turn was given back
            return first, waited, after
        finally:
            await rows.close()

    assert asyncio.run(run()) == ((1,), None, (3,))
