"""`GET /openapi.json`: the OpenAPI 3.1 document, built from the same schemas the server checks.

`OPERATIONS` lists every route with its parameters, request body and responses; request bodies
and parameters are the very objects `api.schemas` validates with, and a test checks that the
document's operations are exactly the app's routes. The error responses an operation can give
follow from what it takes: every /v1 operation can answer 400, 401, 403, 500 and 503; one with a
path id also 404; one with a body also 413, 415 and 422.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from api import schemas
from api import webhook_schemas as ws
from api.http import POSITION_HEADER
from api.problems import PROBLEM_MEDIA_TYPE, PROBLEM_TYPES
from api.rate_limit import UNLIMITED_PATHS
from api.schemas import JSONSchema, Param

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    roles: str
    ok_status: int
    ok_schema: JSONSchema | None
    ok_description: str
    params: list[Param] = field(default_factory=list)
    body: JSONSchema | None = None
    body_required: bool = True
    conflicts: bool = False  # may answer 409
    writes: bool = False  # answers Ledger-Position
    location: bool = False  # 201 with Location
    extra_ok: dict[str, Any] = field(default_factory=dict)  # more media types of the answer
    media_type: str = "application/json"  # of the success answer
    secured: bool = True
    tag: str = "jobs"
    description: str = ""


OPERATIONS: list[Operation] = [
    Operation(
        "post",
        "/v1/jobs",
        "createJob",
        "Create a publish job (idempotent on Idempotency-Key)",
        "writer",
        201,
        schemas.JOB,
        "The job was created. A replay of the same key and body answers 200 with the same job "
        "and `Idempotent-Replayed: true`.",
        params=[schemas.IDEMPOTENCY_KEY],
        body=schemas.NEW_JOB,
        conflicts=True,
        writes=True,
        location=True,
    ),
    Operation(
        "get",
        "/v1/jobs",
        "listJobs",
        "List jobs, oldest first, with cursor pagination",
        "reader, writer, admin (every tenant)",
        200,
        schemas.JOB_LIST,
        "A page of jobs.",
        params=schemas.LIST_JOBS_PARAMS,
    ),
    Operation(
        "get",
        "/v1/jobs/{job_id}",
        "getJob",
        "A job's current status, or its status at `as_of`",
        "reader, writer, admin",
        200,
        schemas.JOB,
        "The job.",
        params=[schemas.JOB_ID, schemas.AS_OF, schemas.MIN_POSITION],
    ),
    Operation(
        "post",
        "/v1/jobs/{job_id}/cancel",
        "cancelJob",
        "Cancel a queued, scheduled or retrying job",
        "writer, admin",
        200,
        schemas.JOB,
        "The job, now canceled.",
        params=[schemas.JOB_ID],
        body=schemas.JOB_ACTION,
        body_required=False,
        conflicts=True,
        writes=True,
    ),
    Operation(
        "post",
        "/v1/jobs/{job_id}/requeue",
        "requeueJob",
        "Requeue a failed-terminal or canceled job (a human retry)",
        "writer, admin",
        200,
        schemas.JOB,
        "The job, queued again; attempt numbering continues.",
        params=[schemas.JOB_ID],
        body=schemas.JOB_ACTION,
        body_required=False,
        conflicts=True,
        writes=True,
    ),
    Operation(
        "get",
        "/v1/jobs/{job_id}/events",
        "listJobEvents",
        "The job's full, hash-chained timeline, oldest first",
        "reader, writer, admin",
        200,
        schemas.EVENT_LIST,
        "Every event of the job.",
        params=[schemas.JOB_ID],
    ),
    Operation(
        "get",
        "/v1/jobs/{job_id}/receipt",
        "getJobReceipt",
        "A self-contained receipt of the job, to forward to a client",
        "reader, writer, admin",
        200,
        schemas.RECEIPT,
        "The receipt (JSON; Markdown with `format=md`).",
        params=[schemas.JOB_ID, schemas.RECEIPT_FORMAT],
        extra_ok={"text/markdown": {"schema": {"type": "string"}}},
    ),
    Operation(
        "post",
        "/v1/tenants",
        "createTenant",
        "Create a tenant and its first writer key (shown once)",
        "admin",
        201,
        schemas.CREATED_TENANT,
        "The tenant and its first key, with the key's token.",
        body=schemas.NEW_TENANT,
        writes=True,
        location=True,
        tag="tenants",
    ),
    Operation(
        "get",
        "/v1/tenants/{tenant_id}",
        "getTenant",
        "A tenant",
        "admin",
        200,
        schemas.TENANT,
        "The tenant.",
        params=[schemas.TENANT_ID],
        tag="tenants",
    ),
    Operation(
        "post",
        "/v1/tenants/{tenant_id}/keys",
        "issueKey",
        "Issue a key with a role (writer or reader); the token is shown once",
        "admin",
        201,
        schemas.ISSUED_KEY,
        "The key, with its token.",
        params=[schemas.TENANT_ID],
        body=schemas.NEW_KEY,
        conflicts=True,
        writes=True,
        location=True,
        tag="tenants",
    ),
    Operation(
        "get",
        "/v1/tenants/{tenant_id}/keys",
        "listKeys",
        "A tenant's keys, oldest first, revoked ones included (never the secret)",
        "admin",
        200,
        schemas.KEY_LIST,
        "A page of keys.",
        params=[schemas.TENANT_ID, schemas.LIMIT, schemas.CURSOR],
        tag="tenants",
    ),
    Operation(
        "get",
        "/v1/tenants/{tenant_id}/keys/{key_id}",
        "getKey",
        "One of a tenant's keys (never the secret)",
        "admin",
        200,
        schemas.KEY,
        "The key.",
        params=[schemas.TENANT_ID, schemas.KEY_ID],
        tag="tenants",
    ),
    Operation(
        "delete",
        "/v1/tenants/{tenant_id}/keys/{key_id}",
        "revokeKey",
        "Revoke a key (at once; revoking a revoked key changes nothing)",
        "admin",
        200,
        schemas.KEY,
        "The key, revoked.",
        params=[schemas.TENANT_ID, schemas.KEY_ID],
        conflicts=True,
        writes=True,
        tag="tenants",
    ),
    Operation(
        "get",
        "/v1/ops/stuck",
        "getStuckReport",
        "The stuck-job report: jobs past a per-state threshold, with counts by state and account",
        "reader, writer (own tenant), admin (every tenant, or the one named by `tenant_id`)",
        200,
        schemas.STUCK_REPORT,
        "The report, read from the job-status read model.",
        params=schemas.STUCK_PARAMS,
        tag="ops",
        description="A job is listed, once per reason, when it is `queued_too_long` (queued "
        "past LEDGER_STUCK_QUEUED_SECONDS), `not_started` (scheduled or retrying and due for "
        "longer than LEDGER_STUCK_OVERDUE_SECONDS), `lease_expired` (running more than "
        "LEDGER_STUCK_LEASE_GRACE_SECONDS past its lease) or `retrying_too_often` (retrying "
        "after more than LEDGER_STUCK_MAX_RETRYING_ATTEMPTS attempts).",
    ),
    Operation(
        "get",
        "/v1/audit/verify",
        "verifyAudit",
        "Verify the audit log: every hash chain and the checkpointed log digest",
        "admin",
        200,
        schemas.AUDIT_REPORT,
        "The report (`ok: false` names the first broken event); the same as `ledger verify`.",
        tag="ops",
        description="Reads the whole log, so it takes time in proportion to it (about the "
        "speed of a projection rebuild). A changed, reordered or removed event breaks its "
        "chain; a truncated log no longer matches its last checkpoint.",
    ),
    Operation(
        "post",
        "/v1/endpoints",
        "createEndpoint",
        "Register a webhook endpoint; its signing secret is shown once",
        "writer (own tenant), admin (names `tenant_id`)",
        201,
        ws.CREATED_ENDPOINT,
        "The endpoint, with its `secret` (and `payload_key` with payload encryption): shown "
        "only in this answer.",
        body=ws.NEW_ENDPOINT,
        writes=True,
        location=True,
        tag="webhooks",
        description="The URL must pass the target guard: https (http only where "
        "LEDGER_ALLOW_PRIVATE_TARGETS allows it), no private, loopback or metadata addresses, "
        "also after DNS resolution; a refused URL is a 422 naming `url`. A host that does not "
        "resolve yet is accepted and checked again before every delivery.",
    ),
    Operation(
        "get",
        "/v1/endpoints",
        "listEndpoints",
        "List webhook endpoints, oldest first (never a secret)",
        "reader, writer (own tenant), admin (every tenant, or the one named by `tenant_id`)",
        200,
        ws.ENDPOINT_LIST,
        "A page of endpoints, from the endpoint-health read model.",
        params=ws.LIST_ENDPOINTS_PARAMS,
        tag="webhooks",
    ),
    Operation(
        "get",
        "/v1/endpoints/{endpoint_id}",
        "getEndpoint",
        "A webhook endpoint (never its secret)",
        "reader, writer, admin",
        200,
        ws.ENDPOINT,
        "The endpoint.",
        params=[ws.ENDPOINT_ID],
        tag="webhooks",
    ),
    Operation(
        "patch",
        "/v1/endpoints/{endpoint_id}",
        "updateEndpoint",
        "Change an endpoint's settings, or disable or enable it",
        "writer, admin",
        200,
        ws.ENDPOINT,
        "The endpoint as changed. A change that changes nothing writes nothing.",
        params=[ws.ENDPOINT_ID],
        body=ws.ENDPOINT_CHANGES,
        conflicts=True,
        writes=True,
        tag="webhooks",
    ),
    Operation(
        "delete",
        "/v1/endpoints/{endpoint_id}",
        "deleteEndpoint",
        "Delete an endpoint: nothing more is delivered to it; it then answers 404",
        "writer, admin",
        204,
        None,
        "Deleted. Its deliveries stay readable under /v1/deliveries.",
        params=[ws.ENDPOINT_ID],
        conflicts=True,
        writes=True,
        tag="webhooks",
    ),
    Operation(
        "post",
        "/v1/endpoints/{endpoint_id}/rotate-secret",
        "rotateEndpointSecret",
        "A new signing secret (shown once); the previous one signs beside it for a grace period",
        "writer, admin",
        200,
        ws.ROTATED_SECRET,
        "The endpoint with its new `secret` and when the previous one stops signing.",
        params=[ws.ENDPOINT_ID],
        body=ws.ROTATE_SECRET,
        body_required=False,
        conflicts=True,
        writes=True,
        tag="webhooks",
    ),
    Operation(
        "post",
        "/v1/endpoints/{endpoint_id}/test",
        "testEndpoint",
        "Send a `webhook.test` event now; answers the exact request sent and the response",
        "writer, admin",
        200,
        ws.TEST_RESULT,
        "The test delivery (`succeeded` or `failed`), the request as sent and what came back.",
        params=[ws.ENDPOINT_ID],
        body=ws.TEST_EVENT,
        body_required=False,
        conflicts=True,
        writes=True,
        tag="webhooks",
        description="One attempt, signed like every delivery, never retried. 409 while the "
        "endpoint is disabled; 503 `webhooks-unavailable` when this server has no sender.",
    ),
    Operation(
        "get",
        "/v1/endpoints/{endpoint_id}/deliveries",
        "listEndpointDeliveries",
        "An endpoint's deliveries, oldest first, with their state and attempt count",
        "reader, writer, admin",
        200,
        ws.DELIVERY_LIST,
        "A page of deliveries, from the delivery-queue read model.",
        params=[ws.ENDPOINT_ID, *ws.ENDPOINT_DELIVERIES_PARAMS],
        tag="webhooks",
    ),
    Operation(
        "post",
        "/v1/endpoints/{endpoint_id}/recover",
        "recoverEndpoint",
        "Redeliver every dead-lettered or held delivery of the endpoint made since a time",
        "writer, admin",
        200,
        ws.RECOVERED,
        "How many deliveries were retried, and their ids.",
        params=[ws.ENDPOINT_ID],
        body=ws.RECOVER,
        conflicts=True,
        writes=True,
        tag="webhooks",
        description="Held deliveries are those that arrived while the endpoint was disabled. "
        "409 while it is disabled: enable it first.",
    ),
    Operation(
        "get",
        "/v1/endpoints/{endpoint_id}/health",
        "getEndpointHealth",
        "The endpoint's health: success rate and latency over a window, failure streak",
        "reader, writer, admin",
        200,
        ws.HEALTH_REPORT,
        "The report, from the endpoint-health read model.",
        params=[ws.ENDPOINT_ID, *ws.HEALTH_PARAMS],
        tag="webhooks",
    ),
    Operation(
        "get",
        "/v1/deliveries",
        "listDeliveries",
        "List deliveries, oldest first (`state=dead_lettered`: the dead letters)",
        "reader, writer (own tenant), admin (every tenant, or the one named by `tenant_id`)",
        200,
        ws.DELIVERY_LIST,
        "A page of deliveries, from the delivery-queue read model.",
        params=ws.LIST_DELIVERIES_PARAMS,
        tag="webhooks",
    ),
    Operation(
        "get",
        "/v1/deliveries/{delivery_id}",
        "getDelivery",
        "One delivery with its body and every attempt: time, status, latency, response, error",
        "reader, writer, admin",
        200,
        ws.DELIVERY_DETAIL,
        "The delivery.",
        params=[ws.DELIVERY_ID],
        tag="webhooks",
    ),
    Operation(
        "post",
        "/v1/deliveries/{delivery_id}/retry",
        "retryDelivery",
        "Send a delivery again now with a fresh retry schedule (also dead-lettered or held ones)",
        "writer, admin",
        200,
        ws.DELIVERY,
        "The delivery, pending again.",
        params=[ws.DELIVERY_ID],
        body=ws.DELIVERY_ACTION,
        body_required=False,
        conflicts=True,
        writes=True,
        tag="webhooks",
        description="409 while its endpoint is disabled or deleted.",
    ),
    Operation(
        "get",
        "/healthz",
        "healthz",
        "Liveness: the process answers",
        "anyone",
        200,
        schemas.HEALTH,
        "Alive.",
        secured=False,
        tag="service",
    ),
    Operation(
        "get",
        "/readyz",
        "readyz",
        "Readiness: the store is reachable and the read models keep up with the log",
        "anyone",
        200,
        schemas.READINESS,
        "Ready; each read model's position and lag.",
        secured=False,
        tag="service",
    ),
    Operation(
        "get",
        "/metrics",
        "metrics",
        "Prometheus metrics (text exposition format 0.0.4)",
        "anyone, unless LEDGER_METRICS_TOKEN is set: then that token as `Bearer`",
        200,
        {"type": "string"},
        "Jobs by state, stuck jobs by reason, attempt outcomes, read-model lag, process metrics.",
        secured=False,
        tag="service",
        media_type="text/plain",
    ),
    Operation(
        "get",
        "/openapi.json",
        "openapi",
        "This document",
        "anyone",
        200,
        {"type": "object"},
        "The OpenAPI 3.1 document.",
        secured=False,
        tag="service",
    ),
]


def _problem(status: int, description: str, headers: dict[str, Any] | None = None) -> Any:
    response: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_REF}},
    }
    if headers:
        response["headers"] = headers
    return response


def _error_responses(op: Operation) -> dict[str, Any]:
    if not op.secured:
        if op.operation_id == "readyz":
            return {
                "503": _problem(
                    503,
                    "Not ready: the store is not reachable (`store-unavailable`), or a read "
                    "model is more than LEDGER_READY_MAX_LAG_EVENTS behind the log "
                    "(`projection-lag`, with each read model's position and lag).",
                    _retry_after(),
                ),
            }
        if op.operation_id == "metrics":
            return {
                "401": _problem(
                    401,
                    "LEDGER_METRICS_TOKEN is set and this request does not bear it.",
                    {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}},
                ),
                "500": _problem(500, "An unexpected error (logged; no details are returned)."),
                "503": _problem(503, "The store is unavailable.", _retry_after()),
            }
        return {}
    responses: dict[str, Any] = {
        "400": _problem(400, "A malformed body, or a bad query parameter or header (named)."),
        "401": _problem(
            401,
            "No API key, or an unknown or revoked one.",
            {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}},
        ),
        "403": _problem(403, "This key's role may not do this."),
        "500": _problem(500, "An unexpected error (logged; no details are returned)."),
        "503": _problem(503, "The store is unavailable; nothing was written.", _retry_after()),
    }
    if op.tag == "webhooks":
        responses["503"] = _problem(
            503,
            "The store is unavailable (`store-unavailable`), or this server cannot do webhooks "
            "(`webhooks-unavailable`: no LEDGER_SECRET_KEY, or no sender for test events); "
            "nothing was written.",
            _retry_after(),
        )
    if any(p.location == "path" for p in op.params):
        responses["404"] = _problem(404, "No such object (or it belongs to another tenant).")
    if op.conflicts:
        responses["409"] = _problem(
            409, "Refused in the current state (transition, idempotency or concurrent update)."
        )
    if op.body is not None:
        responses["413"] = _problem(413, "The body is over the size limit.")
        responses["415"] = _problem(415, "The body is not `application/json`.")
        responses["422"] = _problem(422, "The body breaks a rule; `invalid_params` names fields.")
    return dict(sorted(responses.items()))


# OpenAPI links (for clients and stateful fuzzing): what a creating operation's answer leads
# to. operationId -> (parameter -> runtime expression, the operations that take it)
LINKS: dict[str, tuple[dict[str, str], tuple[str, ...]]] = {
    "createJob": (
        {"job_id": "$response.body#/id"},
        ("getJob", "cancelJob", "requeueJob", "listJobEvents", "getJobReceipt"),
    ),
    "createTenant": ({"tenant_id": "$response.body#/id"}, ("getTenant", "issueKey", "listKeys")),
    "issueKey": (
        {"tenant_id": "$request.path.tenant_id", "key_id": "$response.body#/id"},
        ("getKey", "revokeKey"),
    ),
    "createEndpoint": (
        {"endpoint_id": "$response.body#/id"},
        (
            "getEndpoint",
            "updateEndpoint",
            "rotateEndpointSecret",
            "testEndpoint",
            "listEndpointDeliveries",
            "recoverEndpoint",
            "getEndpointHealth",
            "deleteEndpoint",
        ),
    ),
}


def _links(operation_id: str) -> dict[str, dict[str, Any]]:
    if operation_id not in LINKS:
        return {}
    parameters, targets = LINKS[operation_id]
    links = {
        target[0].upper() + target[1:]: {"operationId": target, "parameters": parameters}
        for target in targets
    }
    statuses = ("200", "201") if operation_id == "createJob" else ("201",)
    return {status: links for status in statuses}


RATE_LIMIT_HEADERS = {
    name: {"description": text, "schema": {"type": "string", "pattern": "^[0-9]+$"}}
    for name, text in (
        ("RateLimit-Limit", "The burst size: requests allowed at once."),
        ("RateLimit-Remaining", "Requests left now (0)."),
        ("RateLimit-Reset", "Seconds until a request is allowed again."),
    )
}


def _retry_after() -> dict[str, Any]:
    return {
        "Retry-After": {
            "description": "Seconds to wait before retrying.",
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
            "required": True,
        }
    }


def _operation(op: Operation) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": op.ok_description}
    if op.ok_schema is not None:
        ok["content"] = {op.media_type: {"schema": op.ok_schema}, **op.extra_ok}
    headers: dict[str, Any] = {}
    if op.writes:
        headers[POSITION_HEADER] = {
            "description": "A notification-log position at or after this request's effect "
            "(for read-your-writes).",
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
            "required": True,
        }
    if op.location:
        headers["Location"] = {"schema": {"type": "string"}, "required": True}
    if headers:
        ok["headers"] = headers
    responses: dict[str, Any] = {str(op.ok_status): ok}
    if op.operation_id == "createJob":
        replay = dict(ok)
        replay["description"] = "A replay: this key already made this job (same body)."
        replay["headers"] = {
            **headers,
            "Idempotent-Replayed": {"schema": {"const": "true"}, "required": True},
        }
        responses["200"] = replay
    for status, links in _links(op.operation_id).items():
        responses[status] = {**responses[status], "links": links}
    responses.update(_error_responses(op))
    if op.path not in UNLIMITED_PATHS:
        responses["429"] = _problem(
            429,
            "Over the request-rate limit (LEDGER_RATE_LIMIT_PER_SECOND per API key, or per "
            "client IP without one); nothing was done.",
            {**_retry_after(), **RATE_LIMIT_HEADERS},
        )
    result: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "description": (op.description + "\n\n" if op.description else "") + f"Roles: {op.roles}.",
        "tags": [op.tag],
        "parameters": [p.openapi() for p in op.params],
        "responses": dict(sorted(responses.items())),
    }
    if not op.secured:
        result["security"] = []
    if op.body is not None:
        result["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": op.body}},
        }
    return result


def build_document(*, max_body_bytes: int) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    problem_types = "\n".join(
        f"- `{slug}` ({status}): {title}" for slug, (status, title) in PROBLEM_TYPES.items()
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "job-ledger",
            "version": "1",
            "description": "The source of truth for asynchronous Pinterest publish jobs.\n\n"
            "Authenticate with `Authorization: Bearer <api key>`. Errors are "
            "`application/problem+json` (RFC 9457); `type` is "
            "`https://job-ledger.dev/problems/<slug>`, one of:\n"
            f"{problem_types}\n\nRequest bodies are limited to {max_body_bytes} bytes. "
            "The NUL character (U+0000) is refused in every string and key of a body (422, "
            "naming the field) and in every parameter (400).",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key: `jlk_...` or the LEDGER_ADMIN_KEY.",
                }
            },
            "schemas": {"Problem": schemas.PROBLEM},
        },
        "tags": [
            {"name": "jobs", "description": "Publish jobs."},
            {"name": "tenants", "description": "Tenants and their API keys (admin)."},
            {"name": "webhooks", "description": "Webhook endpoints and their deliveries."},
            {"name": "ops", "description": "Operating the ledger: the stuck-job report."},
            {"name": "service", "description": "Health, readiness, metrics and this document."},
        ],
    }
