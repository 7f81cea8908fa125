"""`/v1/jobs`: create (idempotent), read, list, cancel, requeue, timeline, receipt."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from api import schemas
from api.auth import Permission
from api.bodies import read_json
from api.context import api_state
from api.http import json_response, path_uuid, query_of
from api.problems import Problem
from api.reads import JobFilters
from ledger.errors import InvalidJob
from ledger.receipt import render_markdown
from ledger.request import MediaSource, NewJob, Pin


async def create_job(request: Request) -> Response:
    api = api_state(request)
    who = await api.authorize(request, Permission.CREATE_JOBS)
    query_of(request, [])
    key = _idempotency_key(request)
    body = await read_json(request, required=True)
    assert body is not None
    schemas.validate_body(schemas.NEW_JOB, body)
    new = _new_job(body)
    assert who.tenant_id is not None  # only tenant writers may create jobs
    created = await api.creates.create(
        new, tenant_id=who.tenant_id, idempotency_key=key, actor=who.actor
    )
    status = created.job.status()
    headers = {"Location": f"/v1/jobs/{status['id']}"}
    if created.created:
        return json_response(status, status=201, position=created.position, headers=headers)
    headers["Idempotent-Replayed"] = "true"
    return json_response(status, position=await api.log_position(), headers=headers)


async def get_job(request: Request) -> Response:
    api = api_state(request)
    who = await api.authorize(request, Permission.READ_JOBS)
    job_id = path_uuid(request, schemas.JOB_ID, not_found="job")
    query = query_of(request, [schemas.AS_OF, schemas.MIN_POSITION])
    as_of, min_position = query.get("as_of"), query.get("min_position")
    if as_of is None and api.status_docs is not None:  # the common read, on the loop
        doc = await api.status_docs.get(who.scope, job_id, min_position)
        if doc is not None:  # the stored JSON as is: the same body json_response would make
            return Response(doc, media_type="application/json")
    status = await api.call(api.reads.get, who.scope, job_id, as_of, min_position)
    return json_response(status)


async def list_jobs(request: Request) -> Response:
    api = api_state(request)
    who = await api.authorize(request, Permission.READ_JOBS)
    query = query_of(request, schemas.LIST_JOBS_PARAMS)
    filters = JobFilters(
        state=query.get("state"),
        account_id=query.get("account_id"),
        board_id=query.get("board_id"),
        created_after=query.get("created_after"),
        created_before=query.get("created_before"),
    )
    limit = query.get("limit", schemas.LIST_LIMIT_DEFAULT)
    cursor, min_position = query.get("cursor"), query.get("min_position")
    if api.status_docs is not None:  # the common list, on the loop
        body = await api.status_docs.list(who.scope, filters, limit, cursor, min_position)
        if body is not None:
            return Response(body, media_type="application/json")
    page = await api.call(api.reads.list, who.scope, filters, limit, cursor, min_position)
    return json_response({"jobs": page.items, "next_cursor": page.next_cursor})


async def cancel_job(request: Request) -> Response:
    return await _change(request, "cancel")


async def requeue_job(request: Request) -> Response:
    return await _change(request, "requeue")


async def job_events(request: Request) -> Response:
    api = api_state(request)
    who = await api.authorize(request, Permission.READ_JOBS)
    job_id = path_uuid(request, schemas.JOB_ID, not_found="job")
    query_of(request, [])
    events = await api.call(api.reads.events, who.scope, job_id)
    return json_response({"job_id": str(job_id), "events": events})


async def job_receipt(request: Request) -> Response:
    api = api_state(request)
    who = await api.authorize(request, Permission.READ_JOBS)
    job_id = path_uuid(request, schemas.JOB_ID, not_found="job")
    query = query_of(request, [schemas.RECEIPT_FORMAT])
    receipt = await api.call(api.reads.receipt, who.scope, job_id)
    if query.get("format", "json") == "md":
        return PlainTextResponse(render_markdown(receipt), media_type="text/markdown")
    return json_response(receipt)


async def _change(request: Request, command: str) -> Response:
    api = api_state(request)
    who = await api.authorize(request, Permission.CHANGE_JOBS)
    job_id = path_uuid(request, schemas.JOB_ID, not_found="job")
    query_of(request, [])
    body = await read_json(request, required=False) or {}
    schemas.validate_body(schemas.JOB_ACTION, body)
    await api.call(api.reads.get, who.scope, job_id)  # 404 for another tenant's job
    action = api.ledger.cancel if command == "cancel" else api.ledger.requeue
    written = await api.call(action, job_id, actor=who.actor, reason=body.get("reason"))
    return json_response(written.job.status(), position=written.position)


def _idempotency_key(request: Request) -> str:
    param = schemas.IDEMPOTENCY_KEY
    raw = request.headers.get(param.name)
    if raw is None:
        raise Problem.parameter(param.name, "header is required: a unique key for this job")
    if not 1 <= len(raw) <= schemas.IDEMPOTENCY_KEY_MAX or not all("!" <= c <= "~" for c in raw):
        raise Problem.parameter(
            param.name,
            f"must be 1 to {schemas.IDEMPOTENCY_KEY_MAX} visible ASCII characters (e.g. a UUID)",
        )
    return raw


def _new_job(body: dict[str, Any]) -> NewJob:
    """The domain request from a schema-valid body; `NewJob` enforces the product rules."""
    pin = body["pin"]
    media = pin["media_source"]
    publish_at = schemas.parse_time_field("publish_at", body.get("publish_at"))
    try:
        return NewJob(
            account_id=body["account_id"],
            board_id=body["board_id"],
            pin=Pin(
                media_source=MediaSource(media["source_type"], media["url"]),
                title=pin.get("title"),
                description=pin.get("description"),
                link=pin.get("link"),
                alt_text=pin.get("alt_text"),
            ),
            publish_at=publish_at,
            mode=body.get("mode", "sandbox"),
            simulate=body.get("simulate"),
            metadata=body.get("metadata", {}),
        )
    except InvalidJob:
        raise
    except (TypeError, ValueError) as error:  # pragma: no cover - the schema rules these out
        raise Problem("validation-error", f"Invalid job request: {error}") from None


async def jobs(request: Request) -> Response:
    # One route per path, so that a 405 lists every method the path allows.
    return await (create_job if request.method == "POST" else list_jobs)(request)


routes = [
    Route("/v1/jobs", jobs, methods=["GET", "POST"], name="jobs"),
    Route("/v1/jobs/{job_id}", get_job, methods=["GET"], name="get_job"),
    Route("/v1/jobs/{job_id}/cancel", cancel_job, methods=["POST"], name="cancel_job"),
    Route("/v1/jobs/{job_id}/requeue", requeue_job, methods=["POST"], name="requeue_job"),
    Route("/v1/jobs/{job_id}/events", job_events, methods=["GET"], name="job_events"),
    Route("/v1/jobs/{job_id}/receipt", job_receipt, methods=["GET"], name="job_receipt"),
]
