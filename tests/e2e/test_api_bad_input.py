# ruff: noqa: E501 - the table of cases reads best one case per line
"""Bad input and faults over HTTP: every malformed request is a 4xx problem+json naming what is
wrong, and nothing is written; a store that is down is a 503 with Retry-After; an unexpected
error is a 500 problem without internals.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import httpx
import pytest

from ledger.errors import StoreUnavailable
from tests.e2e.conftest import Server, Tenant, job_body, log_end

JSON = {"Content-Type": "application/json"}
KEY = {"Idempotency-Key": "bad-input-1"}


def body(**overrides: Any) -> bytes:
    return json.dumps(job_body(**overrides)).encode()


def pin(**overrides: Any) -> dict[str, Any]:
    value: dict[str, Any] = job_body()["pin"]
    value.update(overrides)
    return value


def chunks(total: int) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b" " * 8192
        sent += 8192


# (case id, method, path, headers, content, status, the field/parameter named or None)
CASES: list[tuple[str, str, str, dict[str, str], Any, int, str | None]] = [
    ("malformed json", "POST", "/v1/jobs", {**JSON, **KEY}, b'{"account_id": ', 400, "body"),
    ("invalid utf-8", "POST", "/v1/jobs", {**JSON, **KEY}, b'{"account_id": "\xff\xfe"}', 400, "body"),
    ("lone surrogate", "POST", "/v1/jobs", {**JSON, **KEY}, b'{"account_id": "\\ud800"}', 400, "body"),
    ("byte order mark", "POST", "/v1/jobs", {**JSON, **KEY}, b"\xef\xbb\xbf" + body(), 400, "body"),
    ("NaN", "POST", "/v1/jobs", {**JSON, **KEY}, b'{"account_id": NaN}', 400, "body"),
    ("deep nesting", "POST", "/v1/jobs", {**JSON, **KEY}, b"[" * 5000 + b"]" * 5000, 400, "body"),
    ("array body", "POST", "/v1/jobs", {**JSON, **KEY}, b"[]", 400, "body"),
    ("string body", "POST", "/v1/jobs", {**JSON, **KEY}, b'"job"', 400, "body"),
    ("empty body", "POST", "/v1/jobs", {**JSON, **KEY}, b"", 400, "body"),
    ("form body", "POST", "/v1/jobs", {"Content-Type": "application/x-www-form-urlencoded", **KEY}, b"a=1", 415, None),
    ("no content type", "POST", "/v1/jobs", KEY, body(), 415, None),
    ("latin-1 charset", "POST", "/v1/jobs", {"Content-Type": "application/json; charset=latin-1", **KEY}, body(), 415, None),
    ("no idempotency key", "POST", "/v1/jobs", JSON, body(), 400, "Idempotency-Key"),
    ("blank idempotency key", "POST", "/v1/jobs", {**JSON, "Idempotency-Key": "a b"}, body(), 400, "Idempotency-Key"),
    ("long idempotency key", "POST", "/v1/jobs", {**JSON, "Idempotency-Key": "k" * 256}, body(), 400, "Idempotency-Key"),
    ("unknown field", "POST", "/v1/jobs", {**JSON, **KEY}, body(colour="red"), 422, "colour"),
    ("unknown pin field", "POST", "/v1/jobs", {**JSON, **KEY}, body(pin=pin(size=3)), 422, "pin.size"),
    ("missing board", "POST", "/v1/jobs", {**JSON, **KEY}, json.dumps({"account_id": "a", "pin": pin()}).encode(), 422, "board_id"),
    ("wrong type", "POST", "/v1/jobs", {**JSON, **KEY}, body(account_id=12), 422, "account_id"),
    ("title too long", "POST", "/v1/jobs", {**JSON, **KEY}, body(pin=pin(title="t" * 101)), 422, "pin.title"),
    ("description too long", "POST", "/v1/jobs", {**JSON, **KEY}, body(pin=pin(description="d" * 801)), 422, "pin.description"),
    ("link too long", "POST", "/v1/jobs", {**JSON, **KEY}, body(pin=pin(link="https://e.com/" + "l" * 2040)), 422, "pin.link"),
    ("alt text too long", "POST", "/v1/jobs", {**JSON, **KEY}, body(pin=pin(alt_text="a" * 501)), 422, "pin.alt_text"),
    ("link not http", "POST", "/v1/jobs", {**JSON, **KEY}, body(pin=pin(link="javascript:alert(1)")), 422, "pin.link"),
    ("media not a url", "POST", "/v1/jobs", {**JSON, **KEY}, body(pin=pin(media_source={"source_type": "image_url", "url": "cat.png"})), 422, "pin.media_source.url"),
    ("media source type", "POST", "/v1/jobs", {**JSON, **KEY}, body(pin=pin(media_source={"source_type": "video_id", "url": "https://e.com/v"})), 422, "pin.media_source.source_type"),
    ("publish_at not rfc 3339", "POST", "/v1/jobs", {**JSON, **KEY}, body(publish_at="next tuesday"), 422, "publish_at"),
    ("publish_at without offset", "POST", "/v1/jobs", {**JSON, **KEY}, body(publish_at="2026-11-23T10:00:00"), 422, "publish_at"),
    ("publish_at impossible date", "POST", "/v1/jobs", {**JSON, **KEY}, body(publish_at="2026-02-30T10:00:00Z"), 422, "publish_at"),
    ("unknown outcome", "POST", "/v1/jobs", {**JSON, **KEY}, body(simulate=["published", "explode"]), 422, "simulate[1]"),
    ("empty simulate", "POST", "/v1/jobs", {**JSON, **KEY}, body(simulate=[]), 422, "simulate"),
    ("simulate in live mode", "POST", "/v1/jobs", {**JSON, **KEY}, body(mode="pinterest", simulate=["published"]), 422, "simulate"),
    ("unknown mode", "POST", "/v1/jobs", {**JSON, **KEY}, body(mode="turbo"), 422, "mode"),
    ("blank account id", "POST", "/v1/jobs", {**JSON, **KEY}, body(account_id=" acct "), 422, "account_id"),
    ("metadata value type", "POST", "/v1/jobs", {**JSON, **KEY}, body(metadata={"a": 1}), 422, "metadata.a"),
    ("too many metadata keys", "POST", "/v1/jobs", {**JSON, **KEY}, body(metadata={f"k{i}": "v" for i in range(51)}), 422, "metadata"),
    ("oversized body", "POST", "/v1/jobs", {**JSON, **KEY}, b" " * (256 * 1024 + 1), 413, None),
    ("oversized chunked body", "POST", "/v1/jobs", {**JSON, **KEY}, "chunked", 413, None),
    ("bad limit", "GET", "/v1/jobs?limit=ten", {}, None, 400, "limit"),
    ("limit too big", "GET", "/v1/jobs?limit=1000", {}, None, 400, "limit"),
    ("bad state", "GET", "/v1/jobs?state=done", {}, None, 400, "state"),
    ("bad created_after", "GET", "/v1/jobs?created_after=2026-13-01T00:00:00Z", {}, None, 400, "created_after"),
    ("bad cursor", "GET", "/v1/jobs?cursor=%%%", {}, None, 400, "cursor"),
    ("forged cursor", "GET", "/v1/jobs?cursor=bG9nOjA", {}, None, 400, "cursor"),
    ("unknown parameter", "GET", "/v1/jobs?sort=desc", {}, None, 400, "sort"),
    ("unknown status read parameter", "GET", "/v1/jobs/0b7e4c1e-2f7a-4b8e-9c1d-3a5f6e7d8c9b?fields=id", {}, None, 400, "fields"),
    ("empty status read parameter", "GET", "/v1/jobs/0b7e4c1e-2f7a-4b8e-9c1d-3a5f6e7d8c9b?min_position=", {}, None, 400, "min_position"),
    ("repeated parameter", "GET", "/v1/jobs?state=queued&state=canceled", {}, None, 400, "state"),
    ("cancel unknown field", "POST", "/v1/jobs/{job}/cancel", JSON, b'{"why": "x"}', 422, "why"),
    ("cancel reason type", "POST", "/v1/jobs/{job}/cancel", JSON, b'{"reason": 5}', 422, "reason"),
    ("cancel malformed", "POST", "/v1/jobs/{job}/cancel", JSON, b"{", 400, "body"),
    ("tenant name missing", "POST", "/v1/tenants", JSON, b"{}", 422, "name"),
    ("tenant name too long", "POST", "/v1/tenants", JSON, json.dumps({"name": "n" * 201}).encode(), 422, "name"),
    ("tenant name control chars", "POST", "/v1/tenants", JSON, b'{"name": "a\\u0000b"}', 422, "name"),
    ("NUL in account id", "POST", "/v1/jobs", {**JSON, **KEY}, body(account_id="a\x00b"), 422, "account_id"),
    ("NUL in pin title", "POST", "/v1/jobs", {**JSON, **KEY}, body(pin=pin(title="t\x00")), 422, "pin.title"),
    ("NUL in metadata key", "POST", "/v1/jobs", {**JSON, **KEY}, body(metadata={"k\x00": "v"}), 422, "metadata.k\x00"),
    ("NUL in a filter", "GET", "/v1/jobs?account_id=a%00b", {}, None, 400, "account_id"),
    ("key role unknown", "POST", "/v1/tenants/{tenant}/keys", JSON, b'{"role": "root"}', 422, "role"),
    ("key unknown field", "POST", "/v1/tenants/{tenant}/keys", JSON, b'{"role": "reader", "scopes": []}', 422, "scopes"),
]  # fmt: skip


def test_malformed_requests_are_refused_and_write_nothing(
    api: Server, tenant: Tenant, admin: httpx.Client
) -> None:
    """Every case of the table against one server, each checked to write nothing."""
    from tests.e2e.test_api_webhooks_bad_input import problem_failure

    job = tenant.writer.post("/v1/jobs", json=job_body(), headers={"Idempotency-Key": "ok"}).json()
    failures = []
    for name, method, path, headers, content, status, named in CASES:
        client = admin if path.startswith("/v1/tenants") else tenant.writer
        path = path.format(job=job["id"], tenant=tenant.id)
        if content == "chunked":
            content = chunks(300 * 1024)
        end = log_end(api.ledger)
        answer = client.request(method, path, headers=headers, content=content)
        problem = problem_failure(answer, status, named)
        if problem is None and log_end(api.ledger) != end:
            problem = "something was written"
        if problem is not None:
            failures.append(f"{name}: {problem}")
    assert not failures, "\n".join(failures)
    assert api.ledger.get_job(UUID(job["id"])).version == 1


def test_body_limit_is_configurable(api_server: Any, tenant: Tenant) -> None:
    small = api_server(max_body_bytes=100)
    token = tenant.writer.headers["Authorization"]
    client = small.client()
    answer = client.post(
        "/v1/jobs",
        json=job_body(),
        headers={"Authorization": token, "Idempotency-Key": "k"},
    )
    assert answer.status_code == 413
    assert answer.json()["max_body_bytes"] == 100


class DownReads:
    """A read path whose store is down."""

    def __getattr__(self, name: str) -> Any:
        def down(*args: Any, **kwargs: Any) -> Any:
            raise StoreUnavailable()

        return down


class BrokenReads:
    """A read path with a bug."""

    def __getattr__(self, name: str) -> Any:
        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("secret internals: password=hunter2")

        return broken


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_store_down_is_503_with_retry_after(api_server: Any, tenant: Tenant) -> None:
    server = api_server(reads=DownReads())
    client = server.client()
    client.headers.update(tenant.reader.headers)
    answer = client.get(f"/v1/jobs/{UUID(int=1)}")
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "5"
    assert answer.json()["type"].endswith("/store-unavailable")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_unexpected_error_is_500_without_internals(
    api_server: Any, tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    server = api_server(reads=BrokenReads())
    client = server.client()
    client.headers.update(tenant.reader.headers)
    answer = client.get("/v1/jobs")
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"].endswith("/internal-error")
    assert "hunter2" not in answer.text
    assert "Traceback" not in answer.text
