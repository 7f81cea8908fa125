"""Errors as `application/problem+json` (RFC 9457): the one place that maps errors to statuses.

Every 4xx/5xx the app sends is built here: `Problem` (raised by the HTTP layer for bad input,
auth and routing) and `LedgerError` subclasses (raised by the ledger) both become a body with
`type`, `title`, `status`, `detail`, plus `invalid_params: [{name, reason}]` when a field or
parameter is at fault. Unknown exceptions become a 500 with no internals in the body; they are
logged. This module must never leak a stack trace or a secret into a response.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from eventsourcing.persistence import InterfaceError, OperationalError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.reads import InvalidCursor
from ledger.errors import (
    ConcurrentUpdate,
    DeliveryNotFound,
    EndpointNotFound,
    IdempotencyConflict,
    InvalidEndpoint,
    InvalidJob,
    InvalidTenancy,
    InvalidTransition,
    JobNotFound,
    KeyNotFound,
    LeaseNotExpired,
    LedgerError,
    NotDue,
    StoreUnavailable,
    TenantNotFound,
    WebhooksNotConfigured,
    WrongAttempt,
)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://job-ledger.dev/problems/"
log = logging.getLogger("api")

# slug -> (status, title). Every problem type the API can answer with; docs/api.md lists them.
PROBLEM_TYPES: dict[str, tuple[int, str]] = {
    "malformed-request": (400, "Malformed request"),
    "invalid-parameter": (400, "Invalid parameter"),
    "unauthenticated": (401, "Missing or invalid API key"),
    "forbidden": (403, "Not allowed for this key's role"),
    "not-found": (404, "Not found"),
    "method-not-allowed": (405, "Method not allowed"),
    "invalid-transition": (409, "Transition not allowed"),
    "idempotency-conflict": (409, "Idempotency-Key reused with a different body"),
    "concurrent-update": (409, "Concurrent update"),
    "conflict": (409, "Refused in the current state"),
    "body-too-large": (413, "Request body too large"),
    "unsupported-media-type": (415, "Unsupported media type"),
    "validation-error": (422, "Request body is invalid"),
    "rate-limited": (429, "Too many requests"),
    "internal-error": (500, "Internal error"),
    "store-unavailable": (503, "Store unavailable"),
    "projection-lag": (503, "Read models lag behind the log"),
    "webhooks-unavailable": (503, "Webhooks are not available on this server"),
}

# ledger error class -> problem slug (looked up along the class's MRO, most specific first)
LEDGER_ERRORS: dict[type[LedgerError], str] = {
    JobNotFound: "not-found",
    TenantNotFound: "not-found",
    KeyNotFound: "not-found",
    EndpointNotFound: "not-found",
    DeliveryNotFound: "not-found",
    InvalidTransition: "invalid-transition",
    IdempotencyConflict: "idempotency-conflict",
    ConcurrentUpdate: "concurrent-update",
    LeaseNotExpired: "conflict",
    WrongAttempt: "conflict",
    NotDue: "conflict",
    InvalidJob: "validation-error",
    InvalidTenancy: "validation-error",
    InvalidEndpoint: "validation-error",
    StoreUnavailable: "store-unavailable",
    WebhooksNotConfigured: "webhooks-unavailable",
    LedgerError: "conflict",
}


class Problem(Exception):
    """An HTTP problem raised by the API layer; rendered by `problem_response`."""

    def __init__(
        self,
        slug: str,
        detail: str,
        *,
        invalid_params: list[dict[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        if slug not in PROBLEM_TYPES:
            raise ValueError(f"unknown problem type {slug!r}")
        self.slug = slug
        self.status, self.title = PROBLEM_TYPES[slug]
        self.detail = detail
        self.invalid_params = invalid_params
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})
        super().__init__(detail)

    @classmethod
    def parameter(cls, name: str, reason: str, *, slug: str = "invalid-parameter") -> Problem:
        """A problem naming the one field, header or parameter at fault."""
        return cls(slug, f"{name}: {reason}", invalid_params=[{"name": name, "reason": reason}])

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.invalid_params:
            body["invalid_params"] = self.invalid_params
        body.update(self.extra)
        return body


def problem_response(problem: Problem) -> Response:
    return JSONResponse(
        problem.body(),
        status_code=problem.status,
        headers=problem.headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


def from_ledger_error(error: LedgerError, *, retry_after: int) -> Problem:
    slug = next(LEDGER_ERRORS[c] for c in type(error).__mro__ if c in LEDGER_ERRORS)
    headers: dict[str, str] = {}
    invalid_params = None
    if isinstance(error, InvalidJob | InvalidTenancy | InvalidEndpoint):
        prefix = f"{error.field}: "
        reason = error.message.removeprefix(prefix)
        invalid_params = [{"name": error.field, "reason": reason}]
    if PROBLEM_TYPES[slug][0] == 503:  # every 503 says when to try again
        headers["Retry-After"] = str(retry_after)
    extra = {
        k: v
        for k, v in error.context.items()
        if k in ("job_id", "state", "allowed_from", "command", "idempotency_key")
    }
    return Problem(slug, error.message, invalid_params=invalid_params, headers=headers, extra=extra)


def install(app: Any, *, retry_after: int) -> None:
    """Register the handlers that turn every error into problem+json."""

    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        return problem_response(exc)

    async def on_ledger_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LedgerError)
        if isinstance(exc, StoreUnavailable):
            log.warning("store unavailable: %s %s: %r", request.method, request.url.path, exc)
        return problem_response(from_ledger_error(exc, retry_after=retry_after))

    async def on_store_error(request: Request, exc: Exception) -> Response:
        # A safety net: store access outside the ledger's own methods, not converted there.
        return await on_ledger_error(request, StoreUnavailable())

    async def on_invalid_cursor(request: Request, exc: Exception) -> Response:
        return problem_response(Problem.parameter("cursor", str(exc)))

    async def on_http_exception(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            problem = Problem(
                "method-not-allowed",
                f"{request.method} is not allowed on {request.url.path}.",
                headers=exc.headers,
            )
        elif exc.status_code == 404:
            problem = Problem("not-found", f"No route {request.url.path}.")
        else:  # pragma: no cover - Starlette raises only 404 and 405 here
            problem = Problem("malformed-request", str(exc.detail), headers=exc.headers)
        return problem_response(problem)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return problem_response(
            Problem("internal-error", "The server failed to answer this request; it was logged.")
        )

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(LedgerError, on_ledger_error)
    app.add_exception_handler(InterfaceError, on_store_error)
    app.add_exception_handler(OperationalError, on_store_error)
    app.add_exception_handler(InvalidCursor, on_invalid_cursor)
    app.add_exception_handler(HTTPException, on_http_exception)
    app.add_exception_handler(Exception, on_unexpected)
