"""`/v1/deliveries`: list webhook deliveries (dead letters too), read one with every attempt,
retry one by hand."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api import schemas
from api import webhook_schemas as ws
from api.auth import Permission
from api.bodies import read_json
from api.context import ApiState, api_state
from api.http import json_response, path_uuid, query_of
from api.problems import Problem
from api.webhook_reads import DeliveryFilters, WebhookReads
from ledger.application import JobLedger
from ledger.clock import iso_z
from ledger.delivery import Delivery

MANUAL_RETRY_REASON = "manual"


async def list_deliveries(request: Request) -> Response:
    api = api_state(request)
    who = await api.authorize(request, Permission.READ_WEBHOOKS)
    query = query_of(request, ws.LIST_DELIVERIES_PARAMS)
    filters = DeliveryFilters(
        state=query.get("state"),
        endpoint_id=query.get("endpoint_id"),
        job_id=query.get("job_id"),
    )
    return await delivery_page(
        request, api, who.tenant_filter(query.get("tenant_id")), filters, query
    )


async def get_delivery(request: Request) -> Response:
    api = api_state(request)
    who = await api.authorize(request, Permission.READ_WEBHOOKS)
    delivery_id = path_uuid(request, ws.DELIVERY_ID, not_found="delivery")
    query_of(request, [])
    detail = await api.call(_delivery_detail, api.ledger, delivery_id, who.scope)
    return json_response(detail)


async def retry_delivery(request: Request) -> Response:
    api = api_state(request)
    who = await api.authorize(request, Permission.MANAGE_WEBHOOKS)
    delivery_id = path_uuid(request, ws.DELIVERY_ID, not_found="delivery")
    query_of(request, [])
    body = await read_json(request, required=False) or {}
    schemas.validate_body(ws.DELIVERY_ACTION, body)
    retried = await api.call(
        api.ledger.retry_delivery,
        delivery_id,
        tenant_id=who.scope,
        actor=who.actor,
        reason=body.get("reason") or MANUAL_RETRY_REASON,
    )
    return json_response(retried.aggregate.describe(), position=retried.position)


# -- shared with the endpoint routes --


async def delivery_page(
    request: Request,
    api: ApiState,
    tenant_id: str | None,
    filters: DeliveryFilters,
    query: dict[str, Any],
) -> Response:
    reads = webhook_reads(api, request)
    limit = query.get("limit", schemas.LIST_LIMIT_DEFAULT)
    cursor, min_position = query.get("cursor"), query.get("min_position")
    body = None
    if api.delivery_docs is not None:  # the common list, on the loop
        body = await api.delivery_docs.list(tenant_id, filters, limit, cursor, min_position)
    if body is None:
        body = await api.call(
            reads.list_deliveries, tenant_id, filters, limit, cursor, min_position
        )
    return Response(body, media_type="application/json")


def webhook_reads(api: ApiState, request: Request) -> WebhookReads:
    if api.webhook_reads is None:
        raise Problem("not-found", f"{request.url.path} needs read models; this app has none.")
    return api.webhook_reads


# -- internals --


def _delivery_detail(ledger: JobLedger, delivery_id: UUID, tenant_id: str | None) -> Any:
    delivery = ledger.get_delivery(delivery_id, tenant_id=tenant_id)
    attempts = [
        e for e in ledger.delivery_attempts(delivery_id) if e.originator_version <= delivery.version
    ]
    detail = {
        **delivery.describe(),
        "payload": orjson.loads(delivery.payload),
        "attempt_log": [_attempt(e) for e in attempts],
    }
    return _plain(detail)


def _attempt(event: Delivery.DeliveryAttempted) -> dict[str, Any]:
    return {
        "attempt": event.attempt,
        "succeeded": event.succeeded,
        "result_state": event.result_state,
        "next_attempt_at": iso_z(event.next_attempt_at),
        "hold_reason": event.hold_reason,
        "occurred_at": iso_z(event.timestamp),
        "actor": event.actor,
        "receipt": event.receipt,
    }


def _plain(value: Any) -> Any:
    """Plain JSON: any time the store gave back as a datetime (e.g. inside a receipt the
    sender wrote) becomes RFC 3339 text."""
    if isinstance(value, datetime):
        return iso_z(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


routes = [
    Route("/v1/deliveries", list_deliveries, methods=["GET"], name="deliveries"),
    Route("/v1/deliveries/{delivery_id}", get_delivery, methods=["GET"], name="get_delivery"),
    Route(
        "/v1/deliveries/{delivery_id}/retry",
        retry_delivery,
        methods=["POST"],
        name="retry_delivery",
    ),
]
