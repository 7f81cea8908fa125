"""`AsyncRows`: a small async psycopg pool for hot one-row reads on the event loop
(PostgreSQL only), guarded by the store's breaker (`storage.breaker`).

`fetch_one` answers None whenever it cannot answer for sure: no row, breaker open, a store
error, or no connection free within `acquire_wait` seconds. Callers then take their threaded
path, which maps an unreachable store to `StoreUnavailable` as every other read does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from storage.breaker import ACQUIRE_WAIT_SECONDS, breaker_for
from storage.config import Database

log = logging.getLogger("storage.async_rows")


class AsyncRows:
    def __init__(
        self,
        database: Database,
        *,
        size: int,
        application_name: str,
        acquire_wait: float = ACQUIRE_WAIT_SECONDS,
    ) -> None:
        if not database.is_postgres:
            raise ValueError("AsyncRows reads PostgreSQL only")
        self.breaker = breaker_for(
            database.host, database.port, database.dbname, database.user, database.password
        )
        self.pool = AsyncConnectionPool(
            kwargs={
                "host": database.host,
                "port": database.port,
                "dbname": database.dbname,
                "user": database.user,
                "password": database.password or None,
                "connect_timeout": database.connect_timeout,
                "options": f"-c search_path={database.schema}",
                "autocommit": True,
                "application_name": application_name,
            },
            min_size=1,
            max_size=size,
            timeout=acquire_wait,
            open=False,
        )
        self.acquire_wait = acquire_wait
        # Requests wait for a connection here, not in the pool: the pool's wait runs
        # `asyncio.wait_for`, a task per waiting request. With 32 clients on 4 connections a
        # status read took 203-220 us of the API's CPU instead of 219-235 (`api.reads`).
        self._slots = asyncio.Semaphore(size)

    async def open(self) -> None:
        await self.pool.open(wait=False)  # connects in the background; a cold read waits

    async def close(self) -> None:
        await self.pool.close()

    async def fetch_one(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def fetch_all(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]] | None:
        """Every row (None: this path cannot answer)."""
        if self.breaker.is_open:
            return None
        try:
            # getconn/putconn, not `pool.connection()`: its context manager also enters the
            # connection's, which commits (nothing to commit in autocommit); the two were
            # about 4% of a status read's CPU in a profile
            if self._slots.locked():
                async with asyncio.timeout(self.acquire_wait):
                    await self._slots.acquire()
            else:
                await self._slots.acquire()
            try:
                conn = await self.pool.getconn()
                try:
                    cursor = await conn.execute(sql, params)
                    rows: list[tuple[Any, ...]] = await cursor.fetchall()
                finally:
                    await self.pool.putconn(conn)  # (a broken connection is replaced)
            finally:
                self._slots.release()
        except (psycopg.Error, PoolTimeout, TimeoutError) as error:
            log.debug("read on the loop failed (%s); the threaded path answers", error)
            return None
        return rows
