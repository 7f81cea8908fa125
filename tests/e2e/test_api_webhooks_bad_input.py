# ruff: noqa: E501 - the table of cases reads best one case per line
"""Bad input to the webhook routes: every malformed request is a 4xx problem+json naming the
field or parameter at fault, and nothing is written (the log does not move)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from uuid import UUID

from tests.e2e.conftest import ADMIN_KEY, Server, log_end, make_tenant
from tests.e2e.test_api_webhooks import HOOK, create_job, register, wait_for_deliveries

JSON = {"Content-Type": "application/json"}


def new(**overrides: Any) -> bytes:
    return json.dumps({"url": HOOK, "event_types": ["*"], **overrides}).encode()


def data(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


# (case id, method, path, content, status, the field/parameter named or None)
CASES: list[tuple[str, str, str, Any, int, str | None]] = [
    ("malformed json", "POST", "/v1/endpoints", b'{"url": ', 400, "body"),
    ("empty body", "POST", "/v1/endpoints", b"", 400, "body"),
    ("array body", "POST", "/v1/endpoints", b"[]", 400, "body"),
    ("missing url", "POST", "/v1/endpoints", data(event_types=["*"]), 422, "url"),
    ("missing event types", "POST", "/v1/endpoints", data(url=HOOK), 422, "event_types"),
    ("unknown event type", "POST", "/v1/endpoints", new(event_types=["job.published", "job.exploded"]), 422, "event_types[1]"),
    ("no event types", "POST", "/v1/endpoints", new(event_types=[]), 422, "event_types"),
    ("repeated event type", "POST", "/v1/endpoints", new(event_types=["job.failed", "job.failed"]), 422, "event_types"),
    ("event types not a list", "POST", "/v1/endpoints", new(event_types="*"), 422, "event_types"),
    ("timeout 31", "POST", "/v1/endpoints", new(timeout_seconds=31), 422, "timeout_seconds"),
    ("timeout 0", "POST", "/v1/endpoints", new(timeout_seconds=0), 422, "timeout_seconds"),
    ("timeout a string", "POST", "/v1/endpoints", new(timeout_seconds="5"), 422, "timeout_seconds"),
    ("timeout a boolean", "POST", "/v1/endpoints", new(timeout_seconds=True), 422, "timeout_seconds"),
    ("empty schedule", "POST", "/v1/endpoints", new(retry_schedule=[]), 422, "retry_schedule"),
    ("negative delay", "POST", "/v1/endpoints", new(retry_schedule=[10, -1]), 422, "retry_schedule[1]"),
    ("delay a string", "POST", "/v1/endpoints", new(retry_schedule=["10"]), 422, "retry_schedule[0]"),
    ("delay over 7 days", "POST", "/v1/endpoints", new(retry_schedule=[604801]), 422, "retry_schedule[0]"),
    ("21 delays", "POST", "/v1/endpoints", new(retry_schedule=[1] * 21), 422, "retry_schedule"),
    ("max in flight 0", "POST", "/v1/endpoints", new(max_in_flight=0), 422, "max_in_flight"),
    ("max in flight 65", "POST", "/v1/endpoints", new(max_in_flight=65), 422, "max_in_flight"),
    ("max in flight fraction", "POST", "/v1/endpoints", new(max_in_flight=1.5), 422, "max_in_flight"),
    ("description too long", "POST", "/v1/endpoints", new(description="d" * 501), 422, "description"),
    ("encryption not boolean", "POST", "/v1/endpoints", new(payload_encryption="yes"), 422, "payload_encryption"),
    ("unknown field", "POST", "/v1/endpoints", new(secret="whsec_mine"), 422, "secret"),
    ("tenant id not a uuid", "POST", "/v1/endpoints", new(tenant_id="acme"), 422, "tenant_id"),
    ("ftp url", "POST", "/v1/endpoints", new(url="ftp://hooks.example.com/hook"), 422, "url"),
    ("url without scheme", "POST", "/v1/endpoints", new(url="hooks.example.com/hook"), 422, "url"),
    ("url with password", "POST", "/v1/endpoints", new(url="https://me:pw@hooks.example.com/"), 422, "url"),
    ("url with fragment", "POST", "/v1/endpoints", new(url="https://hooks.example.com/#x"), 422, "url"),
    ("url too long", "POST", "/v1/endpoints", new(url="https://hooks.example.com/" + "a" * 2048), 422, "url"),
    ("plain http url", "POST", "/v1/endpoints", new(url="http://hooks.example.com/hook"), 422, "url"),
    ("private address", "POST", "/v1/endpoints", new(url="https://192.168.1.10/hook"), 422, "url"),
    ("loopback address", "POST", "/v1/endpoints", new(url="https://127.0.0.1:8443/hook"), 422, "url"),
    ("resolves to private", "POST", "/v1/endpoints", new(url="https://internal.example.com/"), 422, "url"),
    ("metadata address", "POST", "/v1/endpoints", new(url="https://169.254.169.254/"), 422, "url"),
    ("patch malformed", "PATCH", "/v1/endpoints/{endpoint}", b"{", 400, "body"),
    ("patch no body", "PATCH", "/v1/endpoints/{endpoint}", b"", 400, "body"),
    ("patch disabled not boolean", "PATCH", "/v1/endpoints/{endpoint}", data(disabled="no"), 422, "disabled"),
    ("patch unknown event type", "PATCH", "/v1/endpoints/{endpoint}", data(event_types=["job.lost"]), 422, "event_types[0]"),
    ("patch timeout 31", "PATCH", "/v1/endpoints/{endpoint}", data(timeout_seconds=31), 422, "timeout_seconds"),
    ("patch private url", "PATCH", "/v1/endpoints/{endpoint}", data(url="https://10.1.2.3/"), 422, "url"),
    ("patch url null", "PATCH", "/v1/endpoints/{endpoint}", data(url=None), 422, "url"),
    ("patch the secret", "PATCH", "/v1/endpoints/{endpoint}", data(secret="whsec_x"), 422, "secret"),
    ("patch encryption", "PATCH", "/v1/endpoints/{endpoint}", data(payload_encryption=True), 422, "payload_encryption"),
    ("grace over 7 days", "POST", "/v1/endpoints/{endpoint}/rotate-secret", data(grace_seconds=604801), 422, "grace_seconds"),
    ("negative grace", "POST", "/v1/endpoints/{endpoint}/rotate-secret", data(grace_seconds=-1), 422, "grace_seconds"),
    ("grace a string", "POST", "/v1/endpoints/{endpoint}/rotate-secret", data(grace_seconds="1d"), 422, "grace_seconds"),
    ("test message empty", "POST", "/v1/endpoints/{endpoint}/test", data(message=""), 422, "message"),
    ("test unknown field", "POST", "/v1/endpoints/{endpoint}/test", data(event_type="job.published"), 422, "event_type"),
    ("recover without since", "POST", "/v1/endpoints/{endpoint}/recover", data(), 422, "since"),
    ("recover since not a time", "POST", "/v1/endpoints/{endpoint}/recover", data(since="yesterday"), 422, "since"),
    ("recover since no offset", "POST", "/v1/endpoints/{endpoint}/recover", data(since="2026-01-01T00:00:00"), 422, "since"),
    ("recover impossible date", "POST", "/v1/endpoints/{endpoint}/recover", data(since="2026-02-30T00:00:00Z"), 422, "since"),
    ("recover since a number", "POST", "/v1/endpoints/{endpoint}/recover", data(since=1767225600), 422, "since"),
    ("retry reason type", "POST", "/v1/deliveries/{delivery}/retry", data(reason=5), 422, "reason"),
    ("retry unknown field", "POST", "/v1/deliveries/{delivery}/retry", data(force=True), 422, "force"),
    ("endpoints bad cursor", "GET", "/v1/endpoints?cursor=%%%", None, 400, "cursor"),
    ("endpoints forged cursor", "GET", "/v1/endpoints?cursor=bG9nOjA", None, 400, "cursor"),
    ("endpoints limit 0", "GET", "/v1/endpoints?limit=0", None, 400, "limit"),
    ("endpoints tenant not uuid", "GET", "/v1/endpoints?tenant_id=acme", None, 400, "tenant_id"),
    ("endpoints unknown parameter", "GET", "/v1/endpoints?state=active", None, 400, "state"),
    ("deliveries bad state", "GET", "/v1/deliveries?state=dead", None, 400, "state"),
    ("deliveries bad cursor", "GET", "/v1/deliveries?cursor=bG9nOjA", None, 400, "cursor"),
    ("deliveries endpoint not uuid", "GET", "/v1/deliveries?endpoint_id=42", None, 400, "endpoint_id"),
    ("deliveries job not uuid", "GET", "/v1/deliveries?job_id=job-1", None, 400, "job_id"),
    ("deliveries repeated state", "GET", "/v1/deliveries?state=held&state=pending", None, 400, "state"),
    ("endpoint deliveries bad cursor", "GET", "/v1/endpoints/{endpoint}/deliveries?cursor=x", None, 400, "cursor"),
    ("endpoint deliveries job filter", "GET", "/v1/endpoints/{endpoint}/deliveries?job_id={delivery}", None, 400, "job_id"),
    ("health window too small", "GET", "/v1/endpoints/{endpoint}/health?window_seconds=5", None, 400, "window_seconds"),
    ("health window not a number", "GET", "/v1/endpoints/{endpoint}/health?window_seconds=day", None, 400, "window_seconds"),
    ("endpoint query parameter", "GET", "/v1/endpoints/{endpoint}?expand=secret", None, 400, "expand"),
    ("delivery query parameter", "GET", "/v1/deliveries/{delivery}?format=raw", None, 400, "format"),
]  # fmt: skip


def test_malformed_webhook_requests_are_refused_and_write_nothing(
    api_server: Callable[..., Server],
) -> None:
    """Every case of the table against one server (one server per case cost minutes)."""
    server = api_server(allow_private_targets=False)
    tenant = make_tenant(server, server.client(ADMIN_KEY))
    endpoint = register(tenant.writer)
    create_job(tenant, "bad-input")
    [delivery] = wait_for_deliveries(tenant.writer, "/v1/deliveries", 1)
    failures = []
    for name, method, path, content, status, named in CASES:
        path = path.format(endpoint=endpoint["id"], delivery=delivery["id"])
        end = log_end(server.ledger)
        headers = JSON if content is not None else {}
        answer = tenant.writer.request(method, path, headers=headers, content=content)
        problem = problem_failure(answer, status, named)
        if problem is None and log_end(server.ledger) != end:
            problem = "something was written"
        if problem is not None:
            failures.append(f"{name}: {problem}")
    assert not failures, "\n".join(failures)
    assert server.ledger.get_endpoint(UUID(endpoint["id"]), tenant_id=None).version == 1


def problem_failure(answer: Any, status: int, named: str | None) -> str | None:
    """Why `answer` is not the expected problem+json naming `named`, or None when it is."""
    if answer.status_code != status:
        return f"status {answer.status_code}, expected {status}: {answer.text}"
    if answer.headers["content-type"] != "application/problem+json":
        return f"content-type {answer.headers['content-type']}"
    problem = answer.json()
    if problem["status"] != status or not problem["type"].startswith(
        "https://job-ledger.dev/problems/"
    ):
        return f"bad problem {problem}"
    if not (problem["title"] and problem["detail"]):
        return f"no title or detail: {problem}"
    if named is not None and (
        named not in [p["name"] for p in problem.get("invalid_params", [])]
        or named not in problem["detail"]
    ):
        return f"does not name {named!r}: {problem}"
    return None
