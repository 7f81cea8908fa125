"""The read baseline: a plain Starlette app that reads one row through a psycopg async pool
(`python -m bench.baseline_app URL PORT`): what any status read costs before our code."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def make_app(url: str, table: str) -> Starlette:
    pool = AsyncConnectionPool(url, min_size=4, max_size=4, open=False)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await pool.open()
        yield
        await pool.close()

    async def read(request: Request) -> Response:
        async with pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT doc FROM {table} WHERE job_id = %s", (request.path_params["id"],)
            )
            row = await cursor.fetchone()
        if row is None:
            return Response(status_code=404)
        return Response(row[0], media_type="application/json")

    return Starlette(routes=[Route("/rows/{id}", read)], lifespan=lifespan)


if __name__ == "__main__":
    url, port, table = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    uvicorn.run(make_app(url, table), host="127.0.0.1", port=port, log_level="warning")
