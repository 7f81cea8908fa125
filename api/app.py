"""`create_app(ledger, config, reads)`: the Starlette application. Nothing is built at import.

The composition root (`jobledger.serve`) passes the ledger, an `ApiConfig` and optionally the
job read path (default: `AggregateJobReads`). A `ProjectionJobReads` also brings the read
models' store, which the stuck report, /metrics and the readiness lag check read; without it
those have nothing to read (see `api.routes.ops`), and the console (`/ui/`, `api.console`) is
mounted only then. The lifespan makes the shared resources (the
thread limiter sized to the DB pool, the authenticator, the metrics registry) and hands them to
handlers through `request.state.api`; it does not own the ledger or the store, whose makers
close them.
"""

from __future__ import annotations

import secrets
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
from api.console import console_routes
from api.context import ApiState, api_state
from api.http import query_of
from api.limits import BodyLimit
from api.openapi import build_document
from api.problems import Problem
from api.rate_limit import RateLimit
from api.reads import AggregateJobReads, JobReads, ProjectionJobReads, StatusDocs
from api.routes import deliveries, endpoints, jobs, ops, tenants
from api.targets import TargetCheck
from api.webhook_reads import DeliveryDocs, WebhookReads
from api.webhook_tester import WebhookTester
from delivery.targets import Resolver
from ledger.application import JobLedger


def create_app(
    ledger: JobLedger,
    config: ApiConfig | None = None,
    reads: JobReads | None = None,
    *,
    webhook_reads: WebhookReads | None = None,
    webhook_tester: WebhookTester | None = None,
    resolver: Resolver | None = None,
) -> Starlette:
    """Webhooks: `webhook_reads` (default: over the read models' store, when there is one),
    `webhook_tester` sends test events (none: the test route answers 503; the lifespan closes
    it), `resolver` is the DNS lookup the URL check uses (default: the system's)."""
    config = config or ApiConfig()
    job_reads: JobReads = reads if reads is not None else AggregateJobReads(ledger)
    views = job_reads.store if isinstance(job_reads, ProjectionJobReads) else None
    if webhook_reads is None and views is not None:
        webhook_reads = WebhookReads(ledger, views)
    document = build_document(max_body_bytes=config.max_body_bytes)
    # The console reads the read models, like /v1/ops/stuck; a random secret when none is
    # configured means sessions last only as long as this app (see ApiConfig.console_secret).
    console = console_routes(config.console_secret or secrets.token_bytes(32)) if views else []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        state = ApiState(
            ledger=ledger,
            reads=job_reads,
            config=config,
            limiter=CapacityLimiter(config.threads),
            authenticator=Authenticator(
                config.admin_key, config.metrics_token, key_cache_seconds=config.key_cache_seconds
            ),
            views=views,
            webhook_reads=webhook_reads,
            targets=TargetCheck(allow_private=config.allow_private_targets, resolver=resolver),
            webhook_tester=webhook_tester,
        )
        if views is not None:
            state.metrics = ops.metrics_registry(
                ledger,
                views,
                config.stuck_thresholds,
                state.log_head,
                job_reads.docs if isinstance(job_reads, ProjectionJobReads) else None,
            )
        if isinstance(job_reads, ProjectionJobReads) and job_reads.store.is_postgres:
            state.status_docs = StatusDocs(job_reads)  # status reads on this loop
            await state.status_docs.open()
            if webhook_reads is not None:  # and delivery lists, through the same pool
                state.delivery_docs = DeliveryDocs(webhook_reads, state.status_docs.rows)
        try:
            yield {"api": state}
        finally:
            if state.status_docs is not None:
                await state.status_docs.close()
            if webhook_tester is not None:  # its HTTP client lives on this loop
                await webhook_tester.aclose()

    async def healthz(request: Request) -> Response:
        query_of(request, [])
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        query_of(request, [])
        api = api_state(request)
        retry = {"Retry-After": str(config.retry_after_seconds)}
        try:
            found = await api.call(ops.projection_lag, api)
        except Exception:
            problems.log.warning("readiness check: the store is not reachable", exc_info=True)
            raise Problem(
                "store-unavailable", "The store is not reachable.", headers=retry
            ) from None
        behind = ", ".join(
            f"{name} by {p['lag_events']}"
            for name, p in found["projections"].items()
            if p["lag_events"] > config.ready_max_lag_events
        )
        if behind:
            raise Problem(
                "projection-lag",
                f"Read models are more than {config.ready_max_lag_events} log entries behind "
                f"the log's end ({found['log_position']}): {behind}.",
                headers=retry,
                extra=found,
            )
        return JSONResponse({"status": "ready", **found})

    async def openapi(request: Request) -> Response:
        query_of(request, [])
        return JSONResponse(document)

    app = Starlette(
        routes=[
            *jobs.routes,
            *tenants.routes,
            *endpoints.routes,
            *deliveries.routes,
            *ops.routes,
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            *console,
        ],
        middleware=[
            *_rate_limit(config),
            Middleware(BodyLimit, max_bytes=config.max_body_bytes),
        ],
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False
    problems.install(app, retry_after=config.retry_after_seconds)
    return app


def _rate_limit(config: ApiConfig) -> list[Middleware]:
    """The request-rate limit (outermost: a refused request costs nothing), when configured."""
    if config.rate_limit_per_second <= 0:
        return []
    return [
        Middleware(
            RateLimit, per_second=config.rate_limit_per_second, burst=config.rate_limit_burst
        )
    ]
