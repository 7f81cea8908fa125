"""`/v1/endpoints`: register, list, read, change and delete webhook endpoints; rotate a signing
secret, send a test event, list an endpoint's deliveries, recover its failed ones, its health.

A signing secret (and a payload key) is answered once, by the request that made it, never
again; those answers carry `Cache-Control: no-store`. A URL is checked against the target guard
(`api.targets`) before anything is written.
"""

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
from api.auth import Permission, Principal
from api.bodies import read_json
from api.context import ApiState, api_state
from api.http import POSITION_HEADER, json_response, path_uuid, query_of
from api.problems import Problem
from api.routes.deliveries import delivery_page, webhook_reads
from api.targets import TargetCheck
from api.webhook_reads import DeliveryFilters, WebhookReads
from api.webhook_tester import render_test_exchange
from ledger.application import JobLedger
from ledger.clock import iso_z
from ledger.endpoint import Endpoint, EndpointSettings, EndpointState
from ledger.errors import InvalidTransition, TenantNotFound
from ledger.webhooks import DEFAULT_GRACE_SECONDS

NO_STORE = {"Cache-Control": "no-store"}
DISABLED_REASON = "disabled through the API"
RECOVER_REASON = "recover"
RECOVER_LIMIT = 1000


async def create_endpoint(request: Request) -> Response:
    api = api_state(request)
    who = await api.authorize(request, Permission.MANAGE_WEBHOOKS)
    query_of(request, [])
    body = await read_json(request, required=True)
    assert body is not None
    schemas.validate_body(ws.NEW_ENDPOINT, body)
    tenant_id = await _owner(api, who, body.get("tenant_id"))
    settings = _settings(body).checked()
    await _targets(api).check(settings.url)
    registered = await api.call(
        api.ledger.register_endpoint,
        tenant_id,
        settings,
        encrypt_payloads=bool(body.get("payload_encryption", False)),
        actor=who.actor,
    )
    shown = {**registered.endpoint.describe(), "secret": registered.secret}
    if registered.payload_key is not None:
        shown["payload_key"] = registered.payload_key
    return json_response(
        shown,
        status=201,
        position=registered.position,
        headers={"Location": f"/v1/endpoints/{registered.endpoint.id}", **NO_STORE},
    )


async def list_endpoints(request: Request) -> Response:
    api = api_state(request)
    who = await api.authorize(request, Permission.READ_WEBHOOKS)
    query = query_of(request, ws.LIST_ENDPOINTS_PARAMS)
    reads = webhook_reads(api, request)
    page = await api.call(
        reads.list_endpoints,
        who.tenant_filter(query.get("tenant_id")),
        query.get("limit", schemas.LIST_LIMIT_DEFAULT),
        query.get("cursor"),
        query.get("min_position"),
    )
    return json_response({"endpoints": page.items, "next_cursor": page.next_cursor})


async def get_endpoint(request: Request) -> Response:
    api = api_state(request)
    who = await api.authorize(request, Permission.READ_WEBHOOKS)
    endpoint_id = _endpoint_id(request)
    query_of(request, [])
    endpoint = await api.call(api.ledger.get_endpoint, endpoint_id, tenant_id=who.scope)
    return json_response(endpoint.describe())


async def update_endpoint(request: Request) -> Response:
    api = api_state(request)
    who = await api.authorize(request, Permission.MANAGE_WEBHOOKS)
    endpoint_id = _endpoint_id(request)
    query_of(request, [])
    body = await read_json(request, required=True)
    assert body is not None
    schemas.validate_body(ws.ENDPOINT_CHANGES, body)
    changes = {k: v for k, v in body.items() if k != "disabled"}
    endpoint = await api.call(api.ledger.get_endpoint, endpoint_id, tenant_id=who.scope)
    # Every rule is checked before the first write, so a refused change writes nothing.
    proposed = _merged(endpoint, changes).checked()
    if proposed.url != endpoint.url:
        await _targets(api).check(proposed.url)
    positions: list[int] = []
    if changes:
        updated = await api.call(
            api.ledger.update_endpoint,
            endpoint_id,
            tenant_id=who.scope,
            changes=changes,
            actor=who.actor,
        )
        endpoint, positions = updated.aggregate, [*positions, *updated.positions]
    if "disabled" in body:
        if body["disabled"]:
            toggled = await api.call(
                api.ledger.disable_endpoint,
                endpoint_id,
                tenant_id=who.scope,
                reason=DISABLED_REASON,
                actor=who.actor,
            )
        else:
            toggled = await api.call(
                api.ledger.enable_endpoint, endpoint_id, tenant_id=who.scope, actor=who.actor
            )
        endpoint, positions = toggled.aggregate, [*positions, *toggled.positions]
    position = max(positions) if positions else await api.log_position()
    return json_response(endpoint.describe(), position=position)


async def delete_endpoint(request: Request) -> Response:
    api = api_state(request)
    who = await api.authorize(request, Permission.MANAGE_WEBHOOKS)
    endpoint_id = _endpoint_id(request)
    query_of(request, [])
    deleted = await api.call(
        api.ledger.delete_endpoint, endpoint_id, tenant_id=who.scope, actor=who.actor
    )
    position = deleted.position or await api.log_position()
    return Response(status_code=204, headers={POSITION_HEADER: str(position)})


async def rotate_secret(request: Request) -> Response:
    api = api_state(request)
    who = await api.authorize(request, Permission.MANAGE_WEBHOOKS)
    endpoint_id = _endpoint_id(request)
    query_of(request, [])
    body = await read_json(request, required=False) or {}
    schemas.validate_body(ws.ROTATE_SECRET, body)
    rotated, secret = await api.call(
        api.ledger.rotate_endpoint_secret,
        endpoint_id,
        tenant_id=who.scope,
        grace_seconds=float(body.get("grace_seconds", DEFAULT_GRACE_SECONDS)),
        actor=who.actor,
    )
    endpoint: Endpoint = rotated.aggregate
    shown = {
        **endpoint.describe(),
        "secret": secret,
        "previous_secret_expires_at": iso_z(endpoint.previous_secrets[-1][1]),
    }
    return json_response(shown, position=rotated.position, headers=NO_STORE)


async def test_endpoint(request: Request) -> Response:
    api = api_state(request)
    who = await api.authorize(request, Permission.MANAGE_WEBHOOKS)
    endpoint_id = _endpoint_id(request)
    query_of(request, [])
    body = await read_json(request, required=False) or {}
    schemas.validate_body(ws.TEST_EVENT, body)
    endpoint = await api.call(api.ledger.get_endpoint, endpoint_id, tenant_id=who.scope)
    tester = api.webhook_tester
    if tester is None:
        raise Problem(
            "webhooks-unavailable",
            "This server has no webhook sender to send test events with.",
            headers={"Retry-After": str(api.config.retry_after_seconds)},
        )
    _require_active(endpoint, "send a test event to")
    payload = {
        "type": "webhook.test",
        "timestamp": iso_z(api.ledger.clock.now()),
        "data": {
            "endpoint_id": str(endpoint.id),
            "tenant_id": endpoint.tenant_id,
            "message": body.get("message", ws.TEST_MESSAGE_DEFAULT),
        },
    }
    created = await api.call(
        api.ledger.create_test_delivery,
        endpoint,
        payload=orjson.dumps(payload).decode(),
        actor=who.actor,
    )
    delivery_id: UUID = created.aggregate.id
    exchange = render_test_exchange(await tester.deliver_now(delivery_id))
    delivery = await api.call(api.ledger.get_delivery, delivery_id, tenant_id=None)
    return json_response(
        {"delivery": delivery.describe(), **exchange}, position=await api.log_position()
    )


async def endpoint_deliveries(request: Request) -> Response:
    api = api_state(request)
    who = await api.authorize(request, Permission.READ_WEBHOOKS)
    endpoint_id = _endpoint_id(request)
    query = query_of(request, ws.ENDPOINT_DELIVERIES_PARAMS)
    await api.call(api.ledger.get_endpoint, endpoint_id, tenant_id=who.scope)  # 404 if not theirs
    filters = DeliveryFilters(state=query.get("state"), endpoint_id=str(endpoint_id))
    return await delivery_page(request, api, who.scope, filters, query)


async def recover(request: Request) -> Response:
    api = api_state(request)
    who = await api.authorize(request, Permission.MANAGE_WEBHOOKS)
    endpoint_id = _endpoint_id(request)
    query_of(request, [])
    body = await read_json(request, required=True)
    assert body is not None
    schemas.validate_body(ws.RECOVER, body)
    since = schemas.parse_time_field("since", body["since"])
    assert since is not None
    endpoint = await api.call(api.ledger.get_endpoint, endpoint_id, tenant_id=who.scope)
    _require_active(endpoint, "recover deliveries of")
    reads = webhook_reads(api, request)
    retried, more, position = await api.call(
        recover_deliveries, api.ledger, reads, endpoint_id, since, who.actor
    )
    return json_response(
        {
            "endpoint_id": str(endpoint_id),
            "since": iso_z(since),
            "retried": len(retried),
            "delivery_ids": retried,
            "more": more,
        },
        position=position or await api.log_position(),
    )


async def endpoint_health(request: Request) -> Response:
    api = api_state(request)
    who = await api.authorize(request, Permission.READ_WEBHOOKS)
    endpoint_id = _endpoint_id(request)
    query = query_of(request, ws.HEALTH_PARAMS)
    endpoint = await api.call(api.ledger.get_endpoint, endpoint_id, tenant_id=who.scope)
    reads = webhook_reads(api, request)
    report = await api.call(
        reads.health,
        endpoint,
        now=api.ledger.clock.now(),
        window_seconds=query.get("window_seconds", ws.HEALTH_WINDOW_DEFAULT),
    )
    return json_response(report)


# -- internals --


def _endpoint_id(request: Request) -> UUID:
    return path_uuid(request, ws.ENDPOINT_ID, not_found="endpoint")


def _targets(api: ApiState) -> TargetCheck:
    assert api.targets is not None  # made by the app's lifespan
    return api.targets


async def _owner(api: ApiState, who: Principal, asked: str | None) -> str:
    """The tenant a new endpoint belongs to: the key's own, or (admin) the one named."""
    tenant_id = None
    if asked is not None:
        try:
            tenant_id = str(UUID(asked))
        except ValueError:
            raise Problem.parameter(
                "tenant_id", "must be a UUID (a tenant's id)", slug="validation-error"
            ) from None
    if who.scope is not None:
        if tenant_id is not None and tenant_id != who.scope:
            raise Problem(
                "forbidden",
                f"A {who.role} key registers endpoints for its own tenant only.",
                extra={"role": who.role},
            )
        return who.scope
    if tenant_id is None:
        raise Problem.parameter(
            "tenant_id",
            "is required with an admin key: the tenant that owns the endpoint",
            slug="validation-error",
        )
    try:
        await api.call(api.ledger.get_tenant, UUID(tenant_id))
    except TenantNotFound:
        raise Problem.parameter("tenant_id", "names no tenant", slug="validation-error") from None
    return tenant_id


def _settings(body: dict[str, Any]) -> EndpointSettings:
    schedule = body.get("retry_schedule")
    return EndpointSettings(
        url=body["url"],
        event_types=tuple(body["event_types"]),
        description=body.get("description"),
        timeout_seconds=body.get("timeout_seconds"),
        retry_schedule=tuple(schedule) if schedule is not None else None,
        max_in_flight=body.get("max_in_flight"),
    )


def _merged(endpoint: Endpoint, changes: dict[str, Any]) -> EndpointSettings:
    """The settings `changes` would leave (as `Endpoint.update` computes them)."""
    fields = {**endpoint.settings().as_fields(), **changes}
    return _settings(fields)


def _require_active(endpoint: Endpoint, command: str) -> None:
    if endpoint.state != EndpointState.ACTIVE:
        raise InvalidTransition(command, str(endpoint.state), ("active",), subject="an endpoint")


def recover_deliveries(
    ledger: JobLedger, reads: WebhookReads, endpoint_id: UUID, since: datetime, actor: str
) -> tuple[list[str], bool, int]:
    """Retry the endpoint's dead-lettered and held deliveries made since `since` (blocking)."""
    found = reads.deliveries_in(
        endpoint_id, ws.RECOVERABLE_STATES, since=since, limit=RECOVER_LIMIT + 1
    )
    # (one retried or sent since the read model saw it is left alone)
    retried = ledger.retry_deliveries(
        found[:RECOVER_LIMIT],
        endpoint_id=endpoint_id,
        states=ws.RECOVERABLE_STATES,
        actor=actor,
        reason=RECOVER_REASON,
    )
    return (
        [str(changed.aggregate.id) for changed in retried],
        len(found) > RECOVER_LIMIT,
        max((changed.position for changed in retried), default=0),
    )


async def endpoints(request: Request) -> Response:
    # One route per path, so that a 405 lists every method the path allows.
    return await (create_endpoint if request.method == "POST" else list_endpoints)(request)


async def endpoint(request: Request) -> Response:
    handler = {"PATCH": update_endpoint, "DELETE": delete_endpoint}.get(request.method)
    return await (handler or get_endpoint)(request)


routes = [
    Route("/v1/endpoints", endpoints, methods=["GET", "POST"], name="endpoints"),
    Route(
        "/v1/endpoints/{endpoint_id}",
        endpoint,
        methods=["GET", "PATCH", "DELETE"],
        name="endpoint",
    ),
    Route(
        "/v1/endpoints/{endpoint_id}/rotate-secret",
        rotate_secret,
        methods=["POST"],
        name="rotate_endpoint_secret",
    ),
    Route(
        "/v1/endpoints/{endpoint_id}/test", test_endpoint, methods=["POST"], name="test_endpoint"
    ),
    Route(
        "/v1/endpoints/{endpoint_id}/deliveries",
        endpoint_deliveries,
        methods=["GET"],
        name="endpoint_deliveries",
    ),
    Route(
        "/v1/endpoints/{endpoint_id}/recover", recover, methods=["POST"], name="recover_endpoint"
    ),
    Route(
        "/v1/endpoints/{endpoint_id}/health",
        endpoint_health,
        methods=["GET"],
        name="endpoint_health",
    ),
]
