"""Operations: the stuck-job report (`GET /v1/ops/stuck`), Prometheus metrics (`GET /metrics`)
and the projection lag that `/readyz` checks.

All of it reads the read models' store (projection rows and tracking positions) and, for lag,
the log's end; nothing here writes. Job times are judged on the ledger's clock, so a test clock
moves the report. An app built without read models (tests over the aggregates alone) has
nothing to report from: the report and /metrics answer 404 saying so, and readiness checks
only the store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api import schemas
from api.auth import Permission
from api.context import ApiState, api_state
from api.http import json_response, query_of
from api.problems import Problem
from ledger.application import JobLedger
from projections.doc_cache import DocCache
from projections.metrics import (
    CONTENT_TYPE,
    LedgerCollector,
    StatusDocsCollector,
    registry_for,
    render,
)
from projections.registry import tracked_names
from projections.runner import tracked_position
from projections.stuck import StuckThresholds, stuck_report
from storage.sql import SqlStore


async def stuck_jobs(request: Request) -> Response:
    api = api_state(request)
    who = await api.authorize(request, Permission.READ_JOBS)
    query = query_of(request, schemas.STUCK_PARAMS)
    tenant_id = who.tenant_filter(query.get("tenant_id"))
    if api.views is None:
        raise _no_read_models(request)
    report = await api.call(
        _stuck_report,
        api.views,
        tenant_id=tenant_id,
        now=api.ledger.clock.now(),
        thresholds=api.config.stuck_thresholds,
        limit=query.get("limit", schemas.STUCK_LIMIT_DEFAULT),
    )
    return json_response({"tenant_id": tenant_id, **report})


async def verify_audit(request: Request) -> Response:
    api = api_state(request)
    await api.authorize(request, Permission.VERIFY_AUDIT)
    query_of(request, [])
    report = await api.call(api.ledger.verify)
    return json_response(report.as_dict())


async def metrics(request: Request) -> Response:
    api = api_state(request)
    api.authenticator.require_metrics_token(request)
    query_of(request, [])
    if api.metrics is None:  # made with the read models' store
        raise _no_read_models(request)
    body = await api.call(render, api.metrics)
    return Response(body, media_type=CONTENT_TYPE)


def metrics_registry(
    ledger: JobLedger,
    views: SqlStore,
    thresholds: StuckThresholds,
    log_head: Callable[[], int],
    status_docs: DocCache | None = None,
) -> CollectorRegistry:
    """The registry /metrics renders: the ledger's numbers from the read models, computed at
    scrape time, this process's status reads from memory (`status_docs`), and
    prometheus-client's process and platform collectors."""
    collector = LedgerCollector(
        views, log_head, tracked_names(), thresholds, now=lambda: ledger.clock.now()
    )
    if status_docs is None:
        return registry_for(collector)
    return registry_for(collector, StatusDocsCollector(status_docs))


def projection_lag(api: ApiState) -> dict[str, Any]:
    """For readiness, blocking: the log's end and each projection's position and lag behind it
    (the tracking rows are shared, so this is the lag of whichever process runs a projection)."""
    head = api.log_head()
    projections: dict[str, dict[str, int]] = {}
    if api.views is not None:
        for name in tracked_names():
            position = tracked_position(api.views, name)[0]
            projections[name] = {"position": position, "lag_events": max(head - position, 0)}
    return {
        "log_position": head,
        "max_lag_events": api.config.ready_max_lag_events,
        "projections": projections,
    }


def _stuck_report(store: SqlStore, **query: Any) -> dict[str, Any]:
    with store.transaction() as tx:
        return stuck_report(tx, **query)


def _no_read_models(request: Request) -> Problem:
    return Problem("not-found", f"{request.url.path} needs read models; this app has none.")


routes = [
    Route("/v1/ops/stuck", stuck_jobs, methods=["GET"], name="stuck_jobs"),
    Route("/v1/audit/verify", verify_audit, methods=["GET"], name="verify_audit"),
    Route("/metrics", metrics, methods=["GET"], name="metrics"),
]
