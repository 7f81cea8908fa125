"""The console's pages and form actions (`/ui/...`), server-rendered HTML over the same ledger,
projections and roles as the JSON API.

Every page reads the session cookie (`api.console.session`) and re-checks the key it names on
each request, so a revoked key is signed out at once. Every form POST carries a CSRF token bound
to the session; a missing or wrong one is a 403 page before anything else happens. Roles are the
API's (`api.auth.Permission`); a tenant key sees only its own tenant, so another tenant's job is
a 404 page. Handlers stay thin: reads go through `api.console.queries` and the read helpers,
writes through the ledger's commands, exactly as the JSON routes do. This module must never put
an API key in a cookie, a page or a log.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl
from uuid import UUID

import orjson
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from api import problems
from api.auth import BOOTSTRAP_ADMIN_ID, GRANTS, Permission, Principal
from api.console import charts, queries
from api.console.session import (
    Session,
    csrf_ok,
    csrf_token,
    new_session,
    read_session,
    sign_session,
)
from api.context import ApiState, api_state
from api.problems import Problem
from api.routes.endpoints import recover_deliveries
from api.webhook_schemas import RECOVERABLE_STATES
from ledger.delivery import Delivery
from ledger.errors import InvalidTransition, JobNotFound, LedgerError
from ledger.receipt import render_markdown
from ledger.story import STATE_WORDS, explain
from ledger.tenancy import ADMIN
from projections.delivery_queue import list_deliveries
from projections.state_history import state_history
from projections.stuck import stuck_report
from storage.sql import SqlStore, parse_utc_text

COOKIE = "ledger_console"
HERE = Path(__file__).parent
HEALTH_WINDOW_SECONDS = 24 * 3600.0
MAX_FORM_BYTES = 8 * 1024
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
JOB_CHANGE_FROM = {
    "cancel": ("queued", "scheduled", "failed_retrying"),
    "requeue": ("failed_terminal", "canceled"),
}


@dataclass(frozen=True)
class SignedIn:
    who: Principal
    session: Session
    csrf: str


class Console:
    """The console's templates and session secret, made once per app."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters["words"] = lambda state: STATE_WORDS.get(str(state), str(state))
        self.templates.filters["when"] = _when

    def page(
        self,
        request: Request,
        template: str,
        context: dict[str, Any],
        *,
        status_code: int = 200,
        signed_in: SignedIn | None = None,
    ) -> Response:
        html = self.templates.get_template(template).render(
            request=request, me=signed_in, now=_now(request), **context
        )
        return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)

    def error(
        self, request: Request, status: int, title: str, detail: str, signed_in: SignedIn | None
    ) -> Response:
        return self.page(
            request,
            "error.html",
            {"status": status, "title": title, "detail": detail},
            status_code=status,
            signed_in=signed_in,
        )

    async def signed_in(self, request: Request) -> SignedIn | None:
        """The session's principal, after re-checking its key (None: sign in again)."""
        session = read_session(self.secret, request.cookies.get(COOKIE), now=time.time())
        if session is None:
            return None
        api = api_state(request)
        who = await api.call(_principal_for, api, session.key_id)
        if who is None:
            return None
        return SignedIn(who, session, csrf_token(self.secret, session))


def _principal_for(api: ApiState, key_id: str) -> Principal | None:
    if key_id == BOOTSTRAP_ADMIN_ID:
        return Principal(BOOTSTRAP_ADMIN_ID, None, ADMIN) if api.config.admin_key else None
    try:
        key = api.ledger.get_key(UUID(key_id))
    except (ValueError, LedgerError):
        return None
    return None if key.revoked else Principal(str(key.id), key.tenant_id, key.role)


Handler = Callable[[Request, SignedIn], Awaitable[Response]]


def _guarded(console: Console, handler: Handler, *, form: bool) -> Any:
    """Sign-in, CSRF (for forms) and errors as pages, around one handler."""

    async def endpoint(request: Request) -> Response:
        me: SignedIn | None = None
        try:
            me = await console.signed_in(request)
            if me is None:
                if form:
                    return console.error(request, 403, "Signed out", "Sign in again.", None)
                response = RedirectResponse("/ui/login", status_code=303)
                response.delete_cookie(COOKIE, path="/ui")
                return response
            if form:
                fields = await _form(request)
                if not csrf_ok(console.secret, me.session, fields.get("csrf_token")):
                    return console.error(
                        request,
                        403,
                        "Form refused",
                        "This form's security token is missing or wrong; reload the page and "
                        "try again.",
                        me,
                    )
                request.state.form = fields
            return await handler(request, me)
        except Problem as problem:
            return console.error(request, problem.status, problem.title, problem.detail, me)
        except LedgerError as error:
            retry_after = api_state(request).config.retry_after_seconds
            mapped = problems.from_ledger_error(error, retry_after=retry_after)
            return console.error(request, mapped.status, mapped.title, mapped.detail, me)

    return endpoint


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise Problem("malformed-request", "This form is too large.")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Problem("malformed-request", "This form is not UTF-8.") from None
    return dict(parse_qsl(text, keep_blank_values=True))


def _now(request: Request) -> datetime:
    return api_state(request).ledger.clock.now()


def _when(value: Any, now: datetime | None = None) -> str:
    """An ISO time as `2026-11-23 17:50:01 UTC`; with `now`, also how long ago or ahead."""
    if not value:
        return "—"
    at = value if isinstance(value, datetime) else _parse(str(value))
    if at is None:
        return str(value)
    text = at.strftime("%Y-%m-%d %H:%M:%S UTC")
    if now is None:
        return text
    seconds = (now - at).total_seconds()
    return f"{text} ({_span(abs(seconds))} {'ago' if seconds >= 0 else 'from now'})"


def _parse(text: str) -> datetime | None:
    try:
        return parse_utc_text(text)
    except ValueError:
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None


def _span(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _views(api: ApiState) -> SqlStore:
    assert api.views is not None  # the console is mounted only with read models
    return api.views


def _job_id(request: Request) -> UUID:
    try:
        return UUID(request.path_params["job_id"])
    except ValueError:
        raise Problem("not-found", "There is no such job.") from None


def _uuid_field(request: Request, name: str, what: str) -> UUID:
    try:
        return UUID(str(request.path_params[name]))
    except ValueError:
        raise Problem("not-found", f"There is no such {what}.") from None


def _back(fields: dict[str, str], default: str) -> str:
    """Where a form returns to: only a console path, never another site."""
    back = fields.get("back", "")
    return back if back.startswith("/ui/") and not back.startswith("//") else default


# -- pages --


def make_routes(console: Console) -> list[BaseRoute]:
    async def login_form(request: Request) -> Response:
        return console.page(request, "login.html", {"error": None})

    async def login(request: Request) -> Response:
        api = api_state(request)
        fields = await _form(request)
        token = fields.get("api_key", "").strip()
        who = api.authenticator.admin(token) if token else None
        if who is None and token:
            key = await api.call(api.ledger.authenticate, token)
            who = Principal(str(key.id), key.tenant_id, key.role) if key else None
        if who is None:
            return console.page(
                request,
                "login.html",
                {"error": "This API key is not valid (unknown, mistyped or revoked)."},
                status_code=401,
            )
        cookie = sign_session(console.secret, new_session(who.key_id, now=time.time()))
        response = RedirectResponse("/ui/", status_code=303)
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=None,
            path="/ui",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def logout(request: Request, me: SignedIn) -> Response:
        response = RedirectResponse("/ui/login", status_code=303)
        response.delete_cookie(COOKIE, path="/ui")
        return response

    async def queue(request: Request, me: SignedIn) -> Response:
        api = api_state(request)
        context = await api.call(_queue_context, api, me.who.scope)
        return console.page(request, "queue.html", context, signed_in=me)

    async def queue_fragment(request: Request, me: SignedIn) -> Response:
        api = api_state(request)
        context = await api.call(_queue_context, api, me.who.scope)
        return console.page(request, "_queue_live.html", context, signed_in=me)

    async def stuck(request: Request, me: SignedIn) -> Response:
        api = api_state(request)
        report = await api.call(
            queries.read,
            _views(api),
            stuck_report,
            tenant_id=me.who.scope,
            now=api.ledger.clock.now(),
            thresholds=api.config.stuck_thresholds,
            limit=200,
        )
        return console.page(request, "stuck.html", {"report": report}, signed_in=me)

    async def outcomes(request: Request, me: SignedIn) -> Response:
        api = api_state(request)
        rows = await api.call(queries.read, _views(api), queries.outcomes, me.who.scope)
        for row in rows:
            row["last_error"] = orjson.loads(row.pop("doc")).get("last_error")
        return console.page(request, "outcomes.html", {"jobs": rows}, signed_in=me)

    async def job(request: Request, me: SignedIn) -> Response:
        api = api_state(request)
        job_id = _job_id(request)
        context = await api.call(_job_context, api, me.who.scope, job_id)
        context["may_change"] = Permission.CHANGE_JOBS in _grants(me.who)
        context["may_retry"] = Permission.MANAGE_WEBHOOKS in _grants(me.who)
        context["change_from"] = JOB_CHANGE_FROM
        return console.page(request, "job.html", context, signed_in=me)

    async def change_job(request: Request, me: SignedIn) -> Response:
        api = api_state(request)
        me.who.require(Permission.CHANGE_JOBS)
        job_id = _job_id(request)
        command = request.path_params["command"]
        if command not in JOB_CHANGE_FROM:
            raise Problem("not-found", f"No console action {command!r}.")
        await api.call(api.reads.get, me.who.scope, job_id)  # 404 for another tenant's job
        action = api.ledger.cancel if command == "cancel" else api.ledger.requeue
        reason = request.state.form.get("reason") or f"{command} from the console"
        await api.call(action, job_id, actor=me.who.actor, reason=reason[:500])
        return RedirectResponse(f"/ui/jobs/{job_id}", status_code=303)

    async def endpoints(request: Request, me: SignedIn) -> Response:
        api = api_state(request)
        context = await api.call(_endpoints_context, api, me.who.scope)
        context["may_retry"] = Permission.MANAGE_WEBHOOKS in _grants(me.who)
        return console.page(request, "endpoints.html", context, signed_in=me)

    async def retry_delivery(request: Request, me: SignedIn) -> Response:
        api = api_state(request)
        me.who.require(Permission.MANAGE_WEBHOOKS)
        delivery_id = _uuid_field(request, "delivery_id", "delivery")
        await api.call(
            api.ledger.retry_delivery, delivery_id, tenant_id=me.who.scope, actor=me.who.actor
        )
        return RedirectResponse(_back(request.state.form, "/ui/endpoints"), status_code=303)

    async def recover_endpoint(request: Request, me: SignedIn) -> Response:
        api = api_state(request)
        me.who.require(Permission.MANAGE_WEBHOOKS)
        endpoint_id = _uuid_field(request, "endpoint_id", "endpoint")
        hours = request.state.form.get("hours", "24")
        if hours not in ("1", "24", "72"):
            raise Problem.parameter("hours", "must be 1, 24 or 72")
        endpoint = await api.call(api.ledger.get_endpoint, endpoint_id, tenant_id=me.who.scope)
        if str(endpoint.state) != "active":
            raise InvalidTransition(
                "recover deliveries of", str(endpoint.state), ("active",), subject="an endpoint"
            )
        assert api.webhook_reads is not None
        since = api.ledger.clock.now() - timedelta(hours=int(hours))
        await api.call(
            recover_deliveries, api.ledger, api.webhook_reads, endpoint_id, since, me.who.actor
        )
        return RedirectResponse("/ui/endpoints", status_code=303)

    def get(path: str, handler: Handler, name: str) -> Route:
        return Route(path, _guarded(console, handler, form=False), methods=["GET"], name=name)

    def post(path: str, handler: Handler, name: str) -> Route:
        return Route(path, _guarded(console, handler, form=True), methods=["POST"], name=name)

    async def to_queue(request: Request) -> Response:
        return RedirectResponse("/ui/", status_code=307)

    return [
        Route("/ui", to_queue, methods=["GET"], name="ui_root"),
        Route("/ui/login", login_form, methods=["GET"], name="ui_login_form"),
        Route("/ui/login", login, methods=["POST"], name="ui_login"),
        post("/ui/logout", logout, "ui_logout"),
        get("/ui/", queue, "ui_queue"),
        get("/ui/live/queue", queue_fragment, "ui_queue_live"),
        get("/ui/stuck", stuck, "ui_stuck"),
        get("/ui/outcomes", outcomes, "ui_outcomes"),
        get("/ui/jobs/{job_id}", job, "ui_job"),
        post("/ui/jobs/{job_id}/{command:str}", change_job, "ui_change_job"),
        get("/ui/endpoints", endpoints, "ui_endpoints"),
        post("/ui/deliveries/{delivery_id}/retry", retry_delivery, "ui_retry_delivery"),
        post("/ui/endpoints/{endpoint_id}/recover", recover_endpoint, "ui_recover_endpoint"),
        Mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui_static"),
    ]


def _grants(who: Principal) -> frozenset[Permission]:
    return GRANTS.get(who.role, frozenset())


# -- blocking reads (run in a worker thread) --


def _queue_context(api: ApiState, scope: str | None) -> dict[str, Any]:
    now = api.ledger.clock.now()
    with _views(api).transaction() as tx:
        counts = queries.counts_by_state(tx, scope)
        jobs = queries.active_jobs(tx, scope)
        series = api.hourly.get(scope, now, lambda: queries.created_per_hour(tx, scope, now=now))
        history = state_history(tx, scope, now=now)
    chart = charts.jobs_per_hour(series, queries.STATE_ORDER, chart_id="jobs-per-hour")
    states_chart = charts.jobs_per_hour(
        history,
        queries.STATE_ORDER,
        chart_id="jobs-by-state",
        title="Jobs in each state at the end of each hour",
        counted="job-hours",
    )
    return {
        "counts": counts,
        "jobs": jobs,
        "chart": chart,
        "states_chart": states_chart,
        "colours": charts.STATE_COLOURS,
        "clock": now,
    }


def _job_context(api: ApiState, scope: str | None, job_id: UUID) -> dict[str, Any]:
    """The job and its deliveries as the ledger has them now (folded from their events), so
    a page shown right after a cancel or a retry already says so; which deliveries exist
    comes from the delivery view."""
    events = api.ledger.job_events(job_id)  # JobNotFound (404) when there is no such job
    job: Any = None
    for event in events:
        job = event.mutate(job)
    if scope is not None and job.tenant_id != scope:
        raise JobNotFound(job_id)  # another tenant's job: 404 as well
    status = job.status()
    with _views(api).transaction() as tx:
        page = list_deliveries(tx, job_id=str(job_id), tenant_id=scope, limit=100)
    deliveries = []
    delivery_events = []
    for doc in page.docs:
        delivery_id = UUID(orjson.loads(doc)["id"])
        history: list[Any] = list(api.ledger.events.get(delivery_id))
        current: Any = None
        for step in history:
            current = step.mutate(current)
        delivery = current.describe()
        delivery_events.append(history)
        delivery["attempt_log"] = [
            {
                "attempt": e.attempt,
                "succeeded": e.succeeded,
                "result_state": e.result_state,
                "at": e.timestamp,
                "next_attempt_at": e.next_attempt_at,
                "status_code": (e.receipt or {}).get("status_code"),
                "latency_ms": (e.receipt or {}).get("latency_ms"),
                "error": (e.receipt or {}).get("error"),
            }
            for e in history
            if isinstance(e, Delivery.DeliveryAttempted)
        ]
        deliveries.append(delivery)
    receipt = api.reads.receipt(scope, job_id)
    return {
        "job": status,
        "story": explain(events, delivery_events),
        "deliveries": deliveries,
        "recoverable": RECOVERABLE_STATES,
        "receipt_text": render_markdown(receipt),
    }


def _endpoints_context(api: ApiState, scope: str | None) -> dict[str, Any]:
    now = api.ledger.clock.now()
    reads = api.webhook_reads
    assert reads is not None
    with _views(api).transaction() as tx:
        ids = queries.endpoint_ids(tx, scope)
        dead = list_deliveries(tx, tenant_id=scope, states=RECOVERABLE_STATES, limit=50)
    rows = []
    # (one deleted since the read model saw it is left out)
    for endpoint in api.ledger.get_endpoints([UUID(i) for i in ids], tenant_id=scope):
        health = reads.health(endpoint, now=now, window_seconds=HEALTH_WINDOW_SECONDS)
        rows.append({"endpoint": endpoint.describe(), "health": health})
    chart = charts.latency_by_endpoint(
        [
            (
                r["endpoint"]["url"],
                r["health"]["latency_ms"]["p50"],
                r["health"]["latency_ms"]["p95"],
            )
            for r in rows
        ],
        chart_id="latency",
    )
    return {
        "rows": rows,
        "chart": chart,
        "dead": [orjson.loads(d) for d in dead.docs],
    }
