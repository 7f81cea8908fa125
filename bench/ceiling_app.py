"""The HTTP ceiling: an empty Starlette app under uvicorn, one process, no database
(`python -m bench.ceiling_app PORT`). `POST /v1/jobs` reads the body and answers 201 with a
small JSON document; `GET /v1/jobs/{id}` answers 200 with one. What any Python HTTP API on
this stack can reach on this machine, before it does any work."""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

DOC = b'{"id":"00000000-0000-0000-0000-000000000000","state":"queued"}'


def make_app() -> Starlette:
    async def create(request: Request) -> Response:
        await request.body()
        return Response(DOC, status_code=201, media_type="application/json")

    async def read(request: Request) -> Response:
        return Response(DOC, media_type="application/json")

    return Starlette(
        routes=[Route("/v1/jobs", create, methods=["POST"]), Route("/v1/jobs/{id}", read)]
    )


if __name__ == "__main__":
    uvicorn.run(make_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
