"""`/v1/tenants`: create tenants and issue, list and revoke their keys (admin keys only)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api import schemas
from api.auth import Permission
from api.bodies import read_json
from api.context import api_state
from api.http import json_response, path_uuid, query_of
from api.reads import decode_cursor, encode_cursor
from ledger.application import JobLedger
from ledger.errors import KeyNotFound


async def create_tenant(request: Request) -> Response:
    api = api_state(request)
    who = await api.authorize(request, Permission.MANAGE_TENANTS)
    query_of(request, [])
    body = await read_json(request, required=True)
    assert body is not None
    schemas.validate_body(schemas.NEW_TENANT, body)
    created = await api.call(api.ledger.create_tenant, body["name"], actor=who.actor)
    tenant_id = str(created.tenant.id)
    return json_response(
        {**created.tenant.describe(), "key": created.first_key.describe()},
        status=201,
        position=created.position,
        headers={"Location": f"/v1/tenants/{tenant_id}"},
    )


async def get_tenant(request: Request) -> Response:
    api = api_state(request)
    await api.authorize(request, Permission.MANAGE_TENANTS)
    tenant_id = path_uuid(request, schemas.TENANT_ID, not_found="tenant")
    query_of(request, [])
    tenant = await api.call(api.ledger.get_tenant, tenant_id)
    return json_response(tenant.describe())


async def keys(request: Request) -> Response:
    # One route per path, so that a 405 lists every method the path allows.
    return await (issue_key if request.method == "POST" else list_keys)(request)


async def issue_key(request: Request) -> Response:
    api = api_state(request)
    who = await api.authorize(request, Permission.MANAGE_TENANTS)
    tenant_id = path_uuid(request, schemas.TENANT_ID, not_found="tenant")
    query_of(request, [])
    body = await read_json(request, required=True)
    assert body is not None
    schemas.validate_body(schemas.NEW_KEY, body)
    issued = await api.call(
        api.ledger.issue_key,
        tenant_id,
        role=body["role"],
        label=body.get("label"),
        actor=who.actor,
    )
    return json_response(
        issued.describe(),
        status=201,
        position=issued.position,
        headers={"Location": f"/v1/tenants/{tenant_id}/keys/{issued.key.id}"},
    )


async def list_keys(request: Request) -> Response:
    api = api_state(request)
    await api.authorize(request, Permission.MANAGE_TENANTS)
    tenant_id = path_uuid(request, schemas.TENANT_ID, not_found="tenant")
    query = query_of(request, [schemas.LIMIT, schemas.CURSOR])
    limit = query.get("limit", schemas.LIST_LIMIT_DEFAULT)
    # The cursor is the count of keys already listed (keys are only ever appended).
    start = decode_cursor(query["cursor"]) if "cursor" in query else 0
    found = await api.call(api.ledger.tenant_keys, tenant_id)
    page = found[start : start + limit]
    more = start + limit < len(found)
    return json_response(
        {
            "keys": [k.describe() for k in page],
            "next_cursor": encode_cursor(start + limit) if more else None,
        }
    )


async def key(request: Request) -> Response:
    return await (revoke_key if request.method == "DELETE" else get_key)(request)


async def get_key(request: Request) -> Response:
    api = api_state(request)
    await api.authorize(request, Permission.MANAGE_TENANTS)
    tenant_id = path_uuid(request, schemas.TENANT_ID, not_found="tenant")
    key_id = path_uuid(request, schemas.KEY_ID, not_found="key")
    query_of(request, [])
    found = await api.call(_tenant_key, api.ledger, tenant_id, key_id)
    return json_response(found)


async def revoke_key(request: Request) -> Response:
    api = api_state(request)
    who = await api.authorize(request, Permission.MANAGE_TENANTS)
    tenant_id = path_uuid(request, schemas.TENANT_ID, not_found="tenant")
    key_id = path_uuid(request, schemas.KEY_ID, not_found="key")
    query_of(request, [])
    try:
        revoked = await api.call(api.ledger.revoke_key, tenant_id, key_id, actor=who.actor)
    finally:  # refused at once in this process (api.auth.KeyCache), even if the call failed late
        api.authenticator.forget_key(str(key_id))
    position = revoked.position if revoked.positions else await api.log_position()
    return json_response(revoked.key.describe(), position=position)


def _tenant_key(ledger: JobLedger, tenant_id: UUID, key_id: UUID) -> dict[str, Any]:
    if not ledger.get_tenant(tenant_id).has_key(key_id):
        raise KeyNotFound(key_id)
    return ledger.get_key(key_id).describe()


routes = [
    Route("/v1/tenants", create_tenant, methods=["POST"], name="create_tenant"),
    Route("/v1/tenants/{tenant_id}", get_tenant, methods=["GET"], name="get_tenant"),
    Route("/v1/tenants/{tenant_id}/keys", keys, methods=["GET", "POST"], name="keys"),
    Route("/v1/tenants/{tenant_id}/keys/{key_id}", key, methods=["GET", "DELETE"], name="key"),
]
