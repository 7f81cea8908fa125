"""Webhook endpoints and deliveries over HTTP, against a real server on both stores: the secret
shown once, changes, rotation, deletion, delivery lists and detail, retry and recover, health,
test events through the real sender to a recording receiver, and the roles."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

import httpx
import orjson
import pytest

from api.reads import ProjectionJobReads
from delivery import signing
from delivery.crypto import decrypt_payload
from jobledger.bootstrap import Service
from jobledger.delivery_role import make_sender
from jobledger.read_models import ReadModels
from ledger.application import JobLedger
from storage.sql import SqlStore
from tests.e2e.conftest import ADMIN_KEY, Server, Tenant, job_body, log_end, make_tenant
from tests.fakes.receiver import Receiver, Reply, running_receiver

HOOK = "https://hooks.example.com/hook"
START = "2026-01-01T00:00:00Z"  # the ManualClock's time: every event happens then
BEFORE = "2025-12-31T00:00:00Z"


def register(client: httpx.Client, **overrides: Any) -> dict[str, Any]:
    answer = client.post("/v1/endpoints", json={"url": HOOK, "event_types": ["*"], **overrides})
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


def create_job(tenant: Tenant, key: str) -> dict[str, Any]:
    answer = tenant.writer.post("/v1/jobs", json=job_body(), headers={"Idempotency-Key": key})
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


def wait_for_deliveries(client: httpx.Client, path: str, count: int) -> list[dict[str, Any]]:
    """The delivery projector makes deliveries shortly after the events: poll the list."""
    deadline = time.monotonic() + 15
    while True:
        answer = client.get(path)
        assert answer.status_code == 200, answer.text
        found: list[dict[str, Any]] = answer.json()["deliveries"]
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"{path}: {len(found)} of {count} deliveries"
        time.sleep(0.05)


def dead_letter(ledger: JobLedger, delivery_id: str, attempt: int = 1) -> None:
    """What the sender records when the last scheduled attempt fails."""
    ledger.record_delivery_attempt(
        UUID(delivery_id),
        attempt=attempt,
        succeeded=False,
        receipt={
            "attempted_at": START,
            "url": HOOK,
            "webhook_timestamp": 1767225600,
            "status_code": 500,
            "latency_ms": 12.5,
            "response_headers": {"content-type": "text/plain"},
            "response_body": "boom",
            "error_class": "http_status",
            "error": "HTTP 500",
        },
        next_attempt_at=None,
        actor="test:sender",
    )


@pytest.fixture
def hook(api: Server, tenant: Tenant) -> tuple[dict[str, Any], dict[str, Any]]:
    """An endpoint for every event type, and the delivery of a job's `job.queued` to it."""
    endpoint = register(tenant.writer)
    job = create_job(tenant, "hooked")
    [delivery] = wait_for_deliveries(tenant.writer, f"/v1/endpoints/{endpoint['id']}/deliveries", 1)
    assert delivery["job_id"] == job["id"]
    return endpoint, delivery


# -- registration and the secret --


def test_secret_is_shown_once_and_never_stored_in_the_clear(api: Server, tenant: Tenant) -> None:
    answer = tenant.writer.post(
        "/v1/endpoints",
        json={
            "url": HOOK,
            "event_types": ["job.published", "job.failed"],
            "description": "orders",
            "timeout_seconds": 10,
            "retry_schedule": [1, 60.5],
            "max_in_flight": 4,
        },
    )
    assert answer.status_code == 201, answer.text
    created = answer.json()
    secret = created["secret"]
    assert secret.startswith("whsec_")
    assert len(signing.secret_bytes(secret)) == 32
    assert "payload_key" not in created
    assert answer.headers["Location"] == f"/v1/endpoints/{created['id']}"
    assert answer.headers["Cache-Control"] == "no-store"
    assert int(answer.headers["Ledger-Position"]) <= log_end(api.ledger)
    assert created["tenant_id"] == tenant.id
    assert created["state"] == "active"
    assert created["event_types"] == ["job.published", "job.failed"]
    assert created["timeout_seconds"] == 10
    assert created["retry_schedule"] == [1, 60.5]
    assert created["max_in_flight"] == 4
    assert created["payload_encryption"] is False
    assert created["version"] == 1

    read = tenant.reader.get(f"/v1/endpoints/{created['id']}")
    assert read.status_code == 200
    assert read.json() == {k: v for k, v in created.items() if k != "secret"}
    listed = tenant.reader.get("/v1/endpoints")
    assert listed.status_code == 200
    assert listed.json() == {"endpoints": [read.json()], "next_cursor": None}
    for text in (read.text, listed.text):
        assert secret not in text
        assert "secret" not in text
    for notification in api.ledger.recorder.select_notifications(1, 10_000):
        assert secret.encode() not in notification.state
    # the ledger still signs with it
    endpoint = api.ledger.get_endpoint(UUID(created["id"]), tenant_id=None)
    assert api.ledger.signing_secrets(endpoint) == [secret]


def test_payload_encryption_gives_a_key_once(api: Server, tenant: Tenant) -> None:
    created = register(tenant.writer, payload_encryption=True)
    key = created["payload_key"]
    endpoint = api.ledger.get_endpoint(UUID(created["id"]), tenant_id=None)
    assert api.ledger.payload_key(endpoint) == key
    read = tenant.writer.get(f"/v1/endpoints/{created['id']}").json()
    assert read["payload_encryption"] is True
    assert "payload_key" not in read
    assert key not in tenant.writer.get("/v1/endpoints").text


def test_admin_names_the_tenant(api: Server, tenant: Tenant, admin: httpx.Client) -> None:
    end = log_end(api.ledger)
    missing = admin.post("/v1/endpoints", json={"url": HOOK, "event_types": ["*"]})
    assert missing.status_code == 422
    assert missing.json()["invalid_params"][0]["name"] == "tenant_id"
    unknown = admin.post(
        "/v1/endpoints",
        json={"url": HOOK, "event_types": ["*"], "tenant_id": str(UUID(int=7))},
    )
    assert unknown.status_code == 422
    assert unknown.json()["invalid_params"][0]["name"] == "tenant_id"
    assert log_end(api.ledger) == end

    created = register(admin, tenant_id=tenant.id)
    assert created["tenant_id"] == tenant.id
    assert tenant.reader.get(f"/v1/endpoints/{created['id']}").status_code == 200
    other = make_tenant(api, admin, "Other")
    register(other.writer)
    everyone = admin.get("/v1/endpoints").json()["endpoints"]
    assert {e["tenant_id"] for e in everyone} == {tenant.id, other.id}
    only = admin.get(f"/v1/endpoints?tenant_id={tenant.id}").json()["endpoints"]
    assert [e["id"] for e in only] == [created["id"]]

    end = log_end(api.ledger)
    foreign = tenant.writer.post(
        "/v1/endpoints", json={"url": HOOK, "event_types": ["*"], "tenant_id": other.id}
    )
    assert foreign.status_code == 403
    assert tenant.writer.get(f"/v1/endpoints?tenant_id={other.id}").status_code == 403
    assert log_end(api.ledger) == end
    own = register(tenant.writer, tenant_id=tenant.id)
    assert own["tenant_id"] == tenant.id


def test_endpoint_list_pages(api: Server, tenant: Tenant) -> None:
    ids = [register(tenant.writer, description=f"n{n}")["id"] for n in range(3)]
    first = tenant.reader.get("/v1/endpoints?limit=2").json()
    assert [e["id"] for e in first["endpoints"]] == ids[:2]
    assert first["next_cursor"]
    second = tenant.reader.get(f"/v1/endpoints?limit=2&cursor={first['next_cursor']}").json()
    assert [e["id"] for e in second["endpoints"]] == ids[2:]
    assert second["next_cursor"] is None


# -- the target guard --


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://nowhere.example.net/hook", True),  # does not resolve (yet): accepted
        ("https://93.184.215.14/hook", True),
        ("https://internal.example.com/hook", False),  # resolves to 10.0.0.7
        ("https://mixed.example.com/hook", False),  # one answer is loopback
        ("https://10.0.0.1/hook", False),
        ("https://[::1]/hook", False),
        ("https://[::ffff:127.0.0.1]/hook", False),
        ("https://localhost/hook", False),
        ("http://hooks.example.com/hook", False),  # plain http
        ("https://169.254.169.254/latest/meta-data/", False),
        ("https://0x7f.1/hook", False),
        ("ftp://hooks.example.com/hook", False),
    ],
)
def test_target_guard_when_private_targets_are_off(
    api_server: Callable[..., Server], url: str, allowed: bool
) -> None:
    server = api_server(allow_private_targets=False)
    writer = make_tenant(server, server.client(ADMIN_KEY)).writer
    end = log_end(server.ledger)
    answer = writer.post("/v1/endpoints", json={"url": url, "event_types": ["*"]})
    if allowed:
        assert answer.status_code == 201, answer.text
        return
    assert answer.status_code == 422, answer.text
    assert answer.json()["invalid_params"][0]["name"] == "url"
    assert log_end(server.ledger) == end


def test_private_targets_when_allowed(api_server: Callable[..., Server]) -> None:
    server = api_server(allow_private_targets=True)
    writer = make_tenant(server, server.client(ADMIN_KEY)).writer
    assert register(writer, url="http://127.0.0.1:9/hook")["url"] == "http://127.0.0.1:9/hook"
    assert register(writer, url="https://internal.example.com/hook")
    metadata = writer.post(
        "/v1/endpoints", json={"url": "http://169.254.169.254/", "event_types": ["*"]}
    )
    assert metadata.status_code == 422  # never, whatever the setting


# -- changes --


def test_patch_changes_disables_and_enables(api: Server, tenant: Tenant) -> None:
    endpoint = register(tenant.writer)
    path = f"/v1/endpoints/{endpoint['id']}"
    changed = tenant.writer.patch(
        path,
        json={"url": "https://hooks.example.com/v2", "timeout_seconds": 2.5, "description": "v2"},
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["url"], body["timeout_seconds"], body["description"]) == (
        "https://hooks.example.com/v2",
        2.5,
        "v2",
    )
    assert body["version"] == 2
    assert int(changed.headers["Ledger-Position"]) == log_end(api.ledger)

    end = log_end(api.ledger)
    same = tenant.writer.patch(path, json={"url": "https://hooks.example.com/v2"})
    assert same.status_code == 200
    assert same.json()["version"] == 2
    assert tenant.writer.patch(path, json={}).json()["version"] == 2
    assert log_end(api.ledger) == end  # a no-op writes nothing

    reset = tenant.writer.patch(path, json={"timeout_seconds": None, "retry_schedule": [5, 10]})
    assert (reset.json()["timeout_seconds"], reset.json()["retry_schedule"]) == (None, [5, 10])

    disabled = tenant.writer.patch(path, json={"disabled": True, "description": "paused"})
    assert disabled.status_code == 200
    body = disabled.json()
    assert (body["state"], body["description"], body["version"]) == ("disabled", "paused", 5)
    assert body["disabled_reason"] == "disabled through the API"
    assert body["disabled_automatically"] is False
    end = log_end(api.ledger)
    assert tenant.writer.patch(path, json={"disabled": True}).json()["version"] == 5
    assert log_end(api.ledger) == end

    enabled = tenant.writer.patch(path, json={"disabled": False})
    assert (enabled.json()["state"], enabled.json()["disabled_reason"]) == ("active", None)
    assert tenant.reader.get(path).json() == enabled.json()


def test_refused_change_writes_nothing(api: Server, tenant: Tenant) -> None:
    endpoint = register(tenant.writer)
    path = f"/v1/endpoints/{endpoint['id']}"
    end = log_end(api.ledger)
    # a good change beside a bad one: neither is applied
    refused = tenant.writer.patch(
        path, json={"description": "new", "disabled": True, "url": "https://169.254.169.254/"}
    )
    assert refused.status_code == 422
    assert refused.json()["invalid_params"][0]["name"] == "url"
    assert log_end(api.ledger) == end
    assert tenant.reader.get(path).json()["version"] == 1


def test_rotate_secret(api: Server, tenant: Tenant) -> None:
    endpoint = register(tenant.writer)
    path = f"/v1/endpoints/{endpoint['id']}/rotate-secret"
    rotated = tenant.writer.post(path)
    assert rotated.status_code == 200, rotated.text
    body = rotated.json()
    assert body["secret"].startswith("whsec_")
    assert body["secret"] != endpoint["secret"]
    assert body["previous_secret_expires_at"] == "2026-01-02T00:00:00Z"  # 24 h later
    assert rotated.headers["Cache-Control"] == "no-store"
    assert body["version"] == 2
    aggregate = api.ledger.get_endpoint(UUID(endpoint["id"]), tenant_id=None)
    # both sign while the old one is in its grace period: several `v1,` signatures
    assert api.ledger.signing_secrets(aggregate) == [body["secret"], endpoint["secret"]]
    read = tenant.writer.get(f"/v1/endpoints/{endpoint['id']}").text
    assert body["secret"] not in read

    short = tenant.writer.post(path, json={"grace_seconds": 0})
    assert short.json()["previous_secret_expires_at"] == START
    aggregate = api.ledger.get_endpoint(UUID(endpoint["id"]), tenant_id=None)
    # with no grace the replaced secret stops at once; the first is still in its own grace
    assert api.ledger.signing_secrets(aggregate) == [short.json()["secret"], endpoint["secret"]]


def test_delete_then_404(api: Server, tenant: Tenant, hook: Any) -> None:
    endpoint, delivery = hook
    path = f"/v1/endpoints/{endpoint['id']}"
    deleted = tenant.writer.delete(path)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert int(deleted.headers["Ledger-Position"]) == log_end(api.ledger)
    end = log_end(api.ledger)
    for method, suffix in [
        ("GET", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("POST", "/rotate-secret"),
        ("GET", "/deliveries"),
        ("GET", "/health"),
    ]:
        body = {} if method == "PATCH" else None
        answer = tenant.writer.request(method, path + suffix, json=body)
        assert answer.status_code == 404, (method, suffix, answer.text)
    assert log_end(api.ledger) == end
    assert tenant.reader.get("/v1/endpoints").json()["endpoints"] == []
    # its deliveries stay readable
    assert tenant.reader.get(f"/v1/deliveries/{delivery['id']}").status_code == 200


# -- deliveries --


def test_deliveries_list_and_detail(api: Server, tenant: Tenant) -> None:
    everything = register(tenant.writer)
    outcomes = register(tenant.writer, event_types=["job.published", "job.failed"])
    jobs = [create_job(tenant, f"d{n}") for n in range(3)]
    found = wait_for_deliveries(tenant.reader, f"/v1/endpoints/{everything['id']}/deliveries", 3)
    assert [d["job_id"] for d in found] == [j["id"] for j in jobs]
    first = found[0]
    assert first["event_type"] == "job.queued"
    assert first["state"] == "pending"
    assert first["attempts"] == 0
    assert first["webhook_id"] == f"msg_{UUID(first['id']).hex}"
    assert first["origin"] == "event"
    # a queued job is not an outcome: nothing for the other endpoint
    quiet = tenant.reader.get(f"/v1/endpoints/{outcomes['id']}/deliveries").json()
    assert quiet == {"deliveries": [], "next_cursor": None}

    page = tenant.reader.get("/v1/deliveries?limit=2").json()
    assert [d["id"] for d in page["deliveries"]] == [d["id"] for d in found[:2]]
    rest = tenant.reader.get(f"/v1/deliveries?limit=2&cursor={page['next_cursor']}").json()
    assert [d["id"] for d in rest["deliveries"]] == [found[2]["id"]]
    assert rest["next_cursor"] is None
    by_job = tenant.reader.get(f"/v1/deliveries?job_id={jobs[1]['id']}").json()["deliveries"]
    assert [d["id"] for d in by_job] == [found[1]["id"]]
    by_endpoint = tenant.reader.get(f"/v1/deliveries?endpoint_id={outcomes['id']}").json()
    assert by_endpoint["deliveries"] == []
    assert tenant.reader.get("/v1/deliveries?state=dead_lettered").json()["deliveries"] == []

    detail = tenant.reader.get(f"/v1/deliveries/{first['id']}")
    assert detail.status_code == 200
    body = detail.json()
    assert {k: body[k] for k in first} == first
    assert body["attempt_log"] == []
    payload = body["payload"]
    assert payload["type"] == "job.queued"
    assert payload["timestamp"] == START
    assert payload["data"] == {
        "job_id": jobs[0]["id"],
        "tenant_id": tenant.id,
        "idempotency_key": "d0",
        "account_id": "acct-1",
        "board_id": "board-1",
        "state": "queued",
        "previous_state": None,
        "attempt": 0,
        "external_ref": None,
        "error": None,
        "occurred_at": START,
        "version": 1,
    }


def test_dead_letters_attempts_and_retry(api: Server, tenant: Tenant, hook: Any) -> None:
    _, delivery = hook
    dead_letter(api.ledger, delivery["id"])
    dead = wait_for_deliveries(tenant.reader, "/v1/deliveries?state=dead_lettered", 1)
    assert [d["id"] for d in dead] == [delivery["id"]]
    detail = tenant.reader.get(f"/v1/deliveries/{delivery['id']}").json()
    assert detail["state"] == "dead_lettered"
    [attempt] = detail["attempt_log"]
    assert attempt["attempt"] == 1
    assert attempt["succeeded"] is False
    assert attempt["result_state"] == "dead_lettered"
    assert attempt["actor"] == "test:sender"
    assert attempt["occurred_at"] == START
    assert attempt["receipt"]["status_code"] == 500
    assert attempt["receipt"]["latency_ms"] == 12.5
    assert attempt["receipt"]["response_body"] == "boom"
    assert attempt["receipt"]["error_class"] == "http_status"

    retried = tenant.writer.post(
        f"/v1/deliveries/{delivery['id']}/retry", json={"reason": "fixed the receiver"}
    )
    assert retried.status_code == 200, retried.text
    assert retried.json()["state"] == "pending"
    assert retried.json()["next_attempt_at"] == START
    assert int(retried.headers["Ledger-Position"]) == log_end(api.ledger)
    assert tenant.reader.get("/v1/deliveries?state=dead_lettered").json()["deliveries"] == []


def test_retry_and_recover_refused_while_disabled(api: Server, tenant: Tenant, hook: Any) -> None:
    endpoint, delivery = hook
    dead_letter(api.ledger, delivery["id"])
    path = f"/v1/endpoints/{endpoint['id']}"
    assert tenant.writer.patch(path, json={"disabled": True}).status_code == 200
    end = log_end(api.ledger)
    retry = tenant.writer.post(f"/v1/deliveries/{delivery['id']}/retry")
    assert retry.status_code == 409, retry.text
    assert retry.json()["type"].endswith("/invalid-transition")
    assert retry.json()["state"] == "disabled"
    recover = tenant.writer.post(f"{path}/recover", json={"since": BEFORE})
    assert recover.status_code == 409, recover.text
    assert recover.json()["state"] == "disabled"
    assert log_end(api.ledger) == end
    assert api.ledger.get_delivery(UUID(delivery["id"]), tenant_id=None).state == "dead_lettered"


def test_recover_redelivers_dead_letters_and_held_deliveries(
    api: Server, tenant: Tenant, hook: Any
) -> None:
    endpoint, delivery = hook
    path = f"/v1/endpoints/{endpoint['id']}"
    dead_letter(api.ledger, delivery["id"])
    tenant.writer.patch(path, json={"disabled": True})
    create_job(tenant, "while-disabled")  # its delivery is held, not dropped
    held = wait_for_deliveries(tenant.reader, f"{path}/deliveries?state=held", 1)
    assert held[0]["hold_reason"] == "endpoint_disabled"
    tenant.writer.patch(path, json={"disabled": False})

    later = tenant.writer.post(f"{path}/recover", json={"since": "2026-01-01T00:00:01Z"})
    assert later.status_code == 200
    assert later.json()["retried"] == 0

    recovered = tenant.writer.post(f"{path}/recover", json={"since": BEFORE})
    assert recovered.status_code == 200, recovered.text
    body = recovered.json()
    assert body["retried"] == 2
    assert body["more"] is False
    assert body["since"] == BEFORE
    assert body["endpoint_id"] == endpoint["id"]
    assert set(body["delivery_ids"]) == {delivery["id"], held[0]["id"]}
    for delivery_id in body["delivery_ids"]:
        assert api.ledger.get_delivery(UUID(delivery_id), tenant_id=None).state == "pending"
    end = log_end(api.ledger)
    again = tenant.writer.post(f"{path}/recover", json={"since": BEFORE}).json()
    assert (again["retried"], again["delivery_ids"]) == (0, [])
    assert log_end(api.ledger) == end


def test_health(api: Server, tenant: Tenant, hook: Any) -> None:
    endpoint, delivery = hook
    path = f"/v1/endpoints/{endpoint['id']}/health"
    fresh = tenant.reader.get(path)
    assert fresh.status_code == 200, fresh.text
    report = fresh.json()
    assert (report["state"], report["attempts"], report["success_rate"]) == ("healthy", 0, None)
    assert report["window_seconds"] == 86400
    dead_letter(api.ledger, delivery["id"])
    deadline = time.monotonic() + 10
    while (report := tenant.reader.get(path).json())["attempts"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert report["state"] == "degraded"
    assert report["consecutive_failures"] == 1
    assert report["dead_letters_total"] == 1
    assert report["success_rate"] == 0.0
    assert report["latency_ms"] == {"p50": 12.5, "p95": 12.5}
    assert report["last_error"]["status_code"] == 500
    assert tenant.reader.get(f"{path}?window_seconds=3600").json()["window_seconds"] == 3600
    tenant.writer.patch(f"/v1/endpoints/{endpoint['id']}", json={"disabled": True})
    assert tenant.reader.get(path).json()["state"] == "disabled"


# -- test events --


@pytest.fixture
def sender_store(service: Service) -> Iterator[SqlStore]:
    store = SqlStore(service.database)
    yield store
    store.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as started:
        yield started


def test_test_event_without_a_sender_is_503(api: Server, tenant: Tenant) -> None:
    endpoint = register(tenant.writer)
    end = log_end(api.ledger)
    answer = tenant.writer.post(f"/v1/endpoints/{endpoint['id']}/test")
    assert answer.status_code == 503
    assert answer.json()["type"].endswith("/webhooks-unavailable")
    assert answer.headers["Retry-After"] == "5"
    assert log_end(api.ledger) == end


def test_test_event_is_sent_now_and_answered_exactly(
    api_server: Callable[..., Server],
    service: Service,
    sender_store: SqlStore,
    receiver: Receiver,
) -> None:
    tester = make_sender(service, sender_store, allow_private_targets=True)
    server = api_server(webhook_tester=tester, allow_private_targets=True)
    writer = make_tenant(server, server.client(ADMIN_KEY)).writer
    endpoint = register(writer, url=receiver.url("/hooks/ok"), payload_encryption=True)
    answer = writer.post(
        f"/v1/endpoints/{endpoint['id']}/test", json={"message": "hello from the test"}
    )
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["succeeded"] is True
    assert result["delivery"]["state"] == "succeeded"
    assert result["delivery"]["event_type"] == "webhook.test"
    assert result["delivery"]["origin"] == "test"
    assert result["delivery"]["attempts"] == 1
    [got] = receiver.wait_for(1, path="/hooks/ok")
    sent = result["request"]
    assert (sent["method"], sent["url"]) == ("POST", receiver.url("/hooks/ok"))
    assert sent["body"].encode() == got.body  # the exact bytes
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature", "content-type"):
        assert sent["headers"][name] == got.headers[name]
    assert got.headers["webhook-id"] == result["delivery"]["webhook_id"]
    timestamp = int(got.headers["webhook-timestamp"])
    signing.verify(endpoint["secret"], got.headers, got.body, now=timestamp)
    plain = decrypt_payload(endpoint["payload_key"], got.body)
    message = orjson.loads(plain)
    assert message["type"] == "webhook.test"
    assert message["timestamp"] == START
    assert message["data"] == {
        "endpoint_id": endpoint["id"],
        "tenant_id": endpoint["tenant_id"],
        "message": "hello from the test",
    }
    assert result["response"]["status_code"] == 200
    assert result["response"]["error"] is None
    assert result["response"]["latency_ms"] >= 0
    detail = writer.get(f"/v1/deliveries/{result['delivery']['id']}").json()
    assert len(detail["attempt_log"]) == 1
    # test events do not count towards health
    health = writer.get(f"/v1/endpoints/{endpoint['id']}/health").json()
    assert health["attempts"] == 0


def test_failed_test_event_and_disabled_endpoint(
    api_server: Callable[..., Server],
    service: Service,
    sender_store: SqlStore,
    receiver: Receiver,
) -> None:
    tester = make_sender(service, sender_store, allow_private_targets=True)
    server = api_server(webhook_tester=tester, allow_private_targets=True)
    writer = make_tenant(server, server.client(ADMIN_KEY)).writer
    receiver.script("/hooks/down", Reply(503, body=b"down for maintenance"))
    endpoint = register(writer, url=receiver.url("/hooks/down"))
    failed = writer.post(f"/v1/endpoints/{endpoint['id']}/test").json()
    assert failed["succeeded"] is False
    assert failed["delivery"]["state"] == "failed"  # a test is never retried
    assert failed["response"]["status_code"] == 503
    assert failed["response"]["body"] == "down for maintenance"
    assert failed["response"]["error_class"] == "http_status"
    assert receiver.wait_for(1, path="/hooks/down")[0].json()["type"] == "webhook.test"

    writer.patch(f"/v1/endpoints/{endpoint['id']}", json={"disabled": True})
    end = log_end(server.ledger)
    refused = writer.post(f"/v1/endpoints/{endpoint['id']}/test")
    assert refused.status_code == 409
    assert log_end(server.ledger) == end
    assert len(receiver.requests) == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_no_secret_key_is_503(api: Server, tenant: Tenant) -> None:
    secrets, api.ledger.endpoint_secrets = api.ledger.endpoint_secrets, None
    try:
        end = log_end(api.ledger)
        answer = tenant.writer.post("/v1/endpoints", json={"url": HOOK, "event_types": ["*"]})
        assert answer.status_code == 503
        assert answer.json()["type"].endswith("/webhooks-unavailable")
        assert answer.headers["Retry-After"] == "5"
        assert log_end(api.ledger) == end
    finally:
        api.ledger.endpoint_secrets = secrets


# -- roles --

READS = [
    ("GET", "/v1/endpoints", None),
    ("GET", "/v1/endpoints/{endpoint}", None),
    ("GET", "/v1/endpoints/{endpoint}/deliveries", None),
    ("GET", "/v1/endpoints/{endpoint}/health", None),
    ("GET", "/v1/deliveries", None),
    ("GET", "/v1/deliveries/{delivery}", None),
]
WRITES = [
    ("POST", "/v1/endpoints", {"url": HOOK, "event_types": ["*"], "tenant_id": "{tenant}"}),
    ("PATCH", "/v1/endpoints/{endpoint}", {"description": "matrix"}),
    ("POST", "/v1/endpoints/{endpoint}/rotate-secret", {"grace_seconds": 60}),
    ("POST", "/v1/endpoints/{endpoint}/test", None),  # 503 here: no sender
    ("POST", "/v1/endpoints/{endpoint}/recover", {"since": BEFORE}),
    ("POST", "/v1/deliveries/{delivery}/retry", None),
    ("DELETE", "/v1/endpoints/{endpoint}", None),  # last: the others need the endpoint
]
ALLOWED = {"admin": READS + WRITES, "writer": READS + WRITES, "reader": READS}


def fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: fill(v, ids) for k, v in value.items()}
    return value


@pytest.mark.parametrize("role", ["admin", "writer", "reader"])
def test_role_matrix(
    api: Server, tenant: Tenant, admin: httpx.Client, hook: Any, role: str
) -> None:
    endpoint, delivery = hook
    client = {"admin": admin, "writer": tenant.writer, "reader": tenant.reader}[role]
    ids = {"endpoint": endpoint["id"], "delivery": delivery["id"], "tenant": tenant.id}
    for method, template, body in READS + WRITES:
        end = log_end(api.ledger)
        answer = client.request(method, fill(template, ids), json=fill(body, ids))
        if (method, template, body) in ALLOWED[role]:
            assert answer.status_code in (200, 201, 204, 503), (role, template, answer.text)
            if template.endswith("/test"):
                assert answer.status_code == 503
        else:
            assert answer.status_code == 403, (role, template, answer.text)
            assert answer.json()["type"].endswith("/forbidden")
            assert log_end(api.ledger) == end


def test_another_tenants_endpoints_and_deliveries_are_404(
    api: Server, tenant: Tenant, admin: httpx.Client, hook: Any
) -> None:
    endpoint, delivery = hook
    other = make_tenant(api, admin, "Other")
    ids = {"endpoint": endpoint["id"], "delivery": delivery["id"], "tenant": tenant.id}
    end = log_end(api.ledger)
    for client in (other.writer, other.reader):
        for method, template, body in READS + WRITES:
            if "{" not in template:
                continue
            answer = client.request(method, fill(template, ids), json=fill(body, ids))
            expected = 403 if client is other.reader and method != "GET" else 404
            assert answer.status_code == expected, (template, answer.text)
        assert client.get("/v1/endpoints").json()["endpoints"] == []
        assert client.get("/v1/deliveries").json()["deliveries"] == []
        listed = client.get(f"/v1/deliveries?endpoint_id={endpoint['id']}")
        assert listed.json()["deliveries"] == []
    assert log_end(api.ledger) == end


# -- read-your-writes --


@pytest.fixture
def frozen(service: Service) -> Iterator[ReadModels]:
    models = ReadModels(service)  # not started: moves only when the test says so
    yield models
    models.close()


def test_lists_wait_for_min_position(
    api_server: Callable[..., Server], frozen: ReadModels, service: Service
) -> None:
    server = api_server(reads=ProjectionJobReads(service.ledger, frozen.store, frozen.waiter))
    writer = make_tenant(server, server.client(ADMIN_KEY)).writer
    frozen.catch_up()
    created = writer.post("/v1/endpoints", json={"url": HOOK, "event_types": ["*"]})
    position = int(created.headers["Ledger-Position"])
    assert writer.get("/v1/endpoints").json()["endpoints"] == []  # the view is behind
    later = threading.Timer(0.3, frozen.catch_up)
    later.start()
    try:
        fresh = writer.get("/v1/endpoints", params={"min_position": position})
    finally:
        later.join()
    assert [e["id"] for e in fresh.json()["endpoints"]] == [created.json()["id"]]
