"""`create_app(ledger, config, reads)`: the Starlette application. Nothing is built at import.

The composition root (`jobledger.serve`) passes the ledger, an `ApiConfig` and optionally the
job read path (default: `AggregateJobReads`). The lifespan makes the shared resources (the
thread limiter sized to the DB pool, the authenticator) and hands them to handlers through
`request.state.api`; it does not own the ledger, whose maker closes it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from anyio import CapacityLimiter
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api import problems
from api.auth import Authenticator
from api.config import ApiConfig
from api.context import ApiState, api_state
from api.limits import BodyLimit
from api.openapi import build_document
from api.problems import Problem
from api.reads import AggregateJobReads, JobReads
from api.routes import jobs, tenants
from api.schemas import parse_query
from ledger.application import JobLedger


def create_app(
    ledger: JobLedger, config: ApiConfig | None = None, reads: JobReads | None = None
) -> Starlette:
    config = config or ApiConfig()
    job_reads: JobReads = reads if reads is not None else AggregateJobReads(ledger)
    document = build_document(max_body_bytes=config.max_body_bytes)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        yield {
            "api": ApiState(
                ledger=ledger,
                reads=job_reads,
                config=config,
                limiter=CapacityLimiter(config.threads),
                authenticator=Authenticator(config.admin_key),
            )
        }

    async def healthz(request: Request) -> Response:
        parse_query(list(request.query_params.multi_items()), [])
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        parse_query(list(request.query_params.multi_items()), [])
        api = api_state(request)
        try:
            await api.call(ledger.recorder.max_notification_id)
        except Exception:
            problems.log.warning("readiness check: the store is not reachable", exc_info=True)
            raise Problem(
                "store-unavailable",
                "The store is not reachable.",
                headers={"Retry-After": str(config.retry_after_seconds)},
            ) from None
        return JSONResponse({"status": "ready"})

    async def openapi(request: Request) -> Response:
        parse_query(list(request.query_params.multi_items()), [])
        return JSONResponse(document)

    app = Starlette(
        routes=[
            *jobs.routes,
            *tenants.routes,
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
        ],
        middleware=[Middleware(BodyLimit, max_bytes=config.max_body_bytes)],
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False
    problems.install(app, retry_after=config.retry_after_seconds)
    return app
