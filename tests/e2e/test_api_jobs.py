"""Every job route through a real uvicorn server on 127.0.0.1, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from datetime import timedelta
from uuid import UUID

import httpx

from ledger.clock import ManualClock
from ledger.job import AttemptFailure, JobState
from tests.e2e.conftest import Server, Tenant, job_body, log_end

WORKER = "worker:w1"


def create(client: httpx.Client, key: str, **overrides: object) -> httpx.Response:
    return client.post("/v1/jobs", json=job_body(**overrides), headers={"Idempotency-Key": key})


def test_create_replay_and_conflict(api: Server, tenant: Tenant) -> None:
    first = create(tenant.writer, "order-1", simulate=["timeout", "published"])
    assert first.status_code == 201
    job = first.json()
    assert job["state"] == "queued"
    assert job["tenant_id"] == tenant.id
    assert job["idempotency_key"] == "order-1"
    assert job["simulate"] == ["timeout", "published"]
    assert first.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert int(first.headers["Ledger-Position"]) == log_end(api.ledger)
    stored = api.ledger.get_job(UUID(job["id"]))
    assert stored.tenant_id == tenant.id
    assert api.ledger.job_events(stored.id)[0].actor == f"key:{tenant.writer_key_id}"

    end = log_end(api.ledger)
    replay = create(tenant.writer, "order-1", simulate=["timeout", "published"])
    assert replay.status_code == 200
    assert replay.json()["id"] == job["id"]
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert int(replay.headers["Ledger-Position"]) >= int(first.headers["Ledger-Position"])

    conflict = create(tenant.writer, "order-1", board_id="another-board")
    assert conflict.status_code == 409
    assert conflict.headers["content-type"] == "application/problem+json"
    assert conflict.json()["type"].endswith("/idempotency-conflict")
    assert "order-1" in conflict.json()["detail"]
    assert log_end(api.ledger) == end  # neither the replay nor the conflict wrote anything


def test_get_and_as_of(api: Server, tenant: Tenant, clock: ManualClock) -> None:
    job = create(tenant.writer, "k").json()
    created_at = clock.now()
    clock.advance(60)
    written = api.ledger.schedule(UUID(job["id"]))
    # status comes from the read model: min_position makes this read see that write
    now = tenant.reader.get(f"/v1/jobs/{job['id']}", params={"min_position": written.position})
    assert now.status_code == 200
    assert now.json()["state"] == "scheduled"
    assert now.json()["version"] == 2

    then = tenant.reader.get(
        f"/v1/jobs/{job['id']}", params={"as_of": (created_at + timedelta(seconds=1)).isoformat()}
    )
    assert then.status_code == 200
    assert then.json()["state"] == "queued"
    assert then.json()["version"] == 1

    before = tenant.reader.get(f"/v1/jobs/{job['id']}", params={"as_of": "2000-01-01T00:00:00Z"})
    assert before.status_code == 404

    bad = tenant.reader.get(f"/v1/jobs/{job['id']}", params={"as_of": "yesterday"})
    assert bad.status_code == 400
    assert bad.json()["invalid_params"][0]["name"] == "as_of"


def test_list_filters_and_pagination(
    api: Server, tenant: Tenant, admin: httpx.Client, clock: ManualClock
) -> None:
    ids = []
    for i in range(5):
        ids.append(create(tenant.writer, f"k{i}", account_id=f"acct-{i % 2}").json()["id"])
        clock.advance(10)
    written = api.ledger.cancel(UUID(ids[4]), actor="key:test")

    everything = tenant.reader.get("/v1/jobs", params={"min_position": written.position})
    assert everything.status_code == 200
    assert [j["id"] for j in everything.json()["jobs"]] == ids  # oldest first
    assert everything.json()["next_cursor"] is None

    pages, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = tenant.reader.get("/v1/jobs", params=params).json()
        pages.append([j["id"] for j in page["jobs"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [ids[0:2], ids[2:4], ids[4:5]]

    by_account = tenant.reader.get("/v1/jobs", params={"account_id": "acct-1"}).json()["jobs"]
    assert [j["id"] for j in by_account] == [ids[1], ids[3]]
    by_state = tenant.reader.get("/v1/jobs", params={"state": "canceled"}).json()["jobs"]
    assert [j["id"] for j in by_state] == [ids[4]]
    assert tenant.reader.get("/v1/jobs", params={"board_id": "nope"}).json()["jobs"] == []

    created = [tenant.reader.get(f"/v1/jobs/{i}").json()["created_at"] for i in ids]
    window = tenant.reader.get(
        "/v1/jobs", params={"created_after": created[0], "created_before": created[3]}
    ).json()["jobs"]
    assert [j["id"] for j in window] == [ids[1], ids[2]]

    # Another tenant sees none of them; an admin sees them all.
    other = admin.post("/v1/tenants", json={"name": "Other"}).json()
    other_client = api.client(other["key"]["token"])
    assert other_client.get("/v1/jobs").json() == {"jobs": [], "next_cursor": None}
    assert [j["id"] for j in admin.get("/v1/jobs").json()["jobs"]] == ids

    bad = tenant.reader.get("/v1/jobs", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 400
    assert bad.json()["invalid_params"] == [
        {"name": "cursor", "reason": bad.json()["invalid_params"][0]["reason"]}
    ]


def test_cancel_and_requeue(api: Server, tenant: Tenant, clock: ManualClock) -> None:
    job = create(tenant.writer, "k").json()
    canceled = tenant.writer.post(f"/v1/jobs/{job['id']}/cancel", json={"reason": "typo"})
    assert canceled.status_code == 200
    assert canceled.json()["state"] == "canceled"
    assert int(canceled.headers["Ledger-Position"]) == log_end(api.ledger)
    event = api.ledger.job_events(UUID(job["id"]))[-1]
    assert type(event).__name__ == "JobCanceled"
    assert event.actor == f"key:{tenant.writer_key_id}"
    assert event.reason == "typo"  # type: ignore[attr-defined]

    end = log_end(api.ledger)
    again = tenant.writer.post(f"/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 409
    assert again.json()["type"].endswith("/invalid-transition")
    assert again.json()["state"] == "canceled"
    assert log_end(api.ledger) == end

    requeued = tenant.writer.post(f"/v1/jobs/{job['id']}/requeue")  # no body at all
    assert requeued.status_code == 200
    assert requeued.json()["state"] == "queued"

    # A job that failed terminally can be requeued; attempt numbering continues.
    other = UUID(create(tenant.writer, "k2", simulate=["invalid_media"]).json()["id"])
    api.ledger.schedule(other)
    api.ledger.start_attempt(other, worker_id=WORKER, lease_seconds=30)
    api.ledger.record_failure(
        other,
        attempt=1,
        failure=AttemptFailure("invalid_media", "image too small", retryable=False),
        actor=WORKER,
    )
    assert api.ledger.state_of(other) is JobState.FAILED_TERMINAL
    requeued = tenant.writer.post(f"/v1/jobs/{other}/requeue", json={"reason": "fixed image"})
    assert requeued.status_code == 200
    assert requeued.json()["state"] == "queued"
    assert requeued.json()["attempts"] == 1


def test_events_and_receipt(api: Server, tenant: Tenant, clock: ManualClock) -> None:
    job_id = UUID(create(tenant.writer, "k").json()["id"])
    api.ledger.schedule(job_id)
    api.ledger.start_attempt(job_id, worker_id=WORKER, lease_seconds=30)
    api.ledger.record_failure(
        job_id,
        attempt=1,
        failure=AttemptFailure("rate_limited", "429", retryable=True, receipt={"rid": "r-1"}),
        actor=WORKER,
    )
    clock.advance(3600)
    api.ledger.start_attempt(job_id, worker_id=WORKER, lease_seconds=30)
    api.ledger.record_success(
        job_id, attempt=2, external_ref="pin-42", receipt={"rid": "r-2"}, actor=WORKER
    )

    events = tenant.reader.get(f"/v1/jobs/{job_id}/events")
    assert events.status_code == 200
    entries = events.json()["events"]
    assert [e["type"] for e in entries] == [
        "JobCreated",
        "JobScheduled",
        "AttemptStarted",
        "AttemptFailed",
        "AttemptStarted",
        "JobPublished",
    ]
    assert [e["version"] for e in entries] == [1, 2, 3, 4, 5, 6]
    for previous, event in itertools.pairwise(entries):
        assert event["prev_hash"] == previous["hash"]

    receipt = tenant.reader.get(f"/v1/jobs/{job_id}/receipt")
    assert receipt.status_code == 200
    body = receipt.json()
    assert body["outcome"]["state"] == "published"
    assert body["outcome"]["external_ref"] == "pin-42"
    assert [a["outcome"] for a in body["attempts"]] == ["failed_retrying", "published"]
    assert body["attempts"][0]["error"]["code"] == "rate_limited"
    assert body["attempts"][0]["receipt"] == {"rid": "r-1"}
    assert body["evidence"]["events"] == 6
    assert body["evidence"]["first_event"]["hash"] == entries[0]["hash"]
    assert body["evidence"]["last_event"]["hash"] == entries[-1]["hash"]

    markdown = tenant.reader.get(f"/v1/jobs/{job_id}/receipt", params={"format": "md"})
    assert markdown.status_code == 200
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert f"# Receipt for job {job_id}" in markdown.text
    assert "**Outcome: published**" in markdown.text
    assert entries[-1]["hash"] in markdown.text

    bad = tenant.reader.get(f"/v1/jobs/{job_id}/receipt", params={"format": "pdf"})
    assert bad.status_code == 400
    assert bad.json()["invalid_params"][0]["name"] == "format"


def test_unknown_and_foreign_ids_are_404(api: Server, tenant: Tenant) -> None:
    for path in (
        "/v1/jobs/00000000-0000-0000-0000-000000000000",
        "/v1/jobs/not-a-uuid",
        f"/v1/jobs/{tenant.id}",  # a tenant's id is not a job's
        f"/v1/jobs/{tenant.writer_key_id}/events",  # nor a key's (its events stay hidden)
        "/v1/jobs/32671479-02e1-516f-b304-e8446a1e8227/receipt",  # the audit checkpoint log
    ):
        answer = tenant.reader.get(path)
        assert answer.status_code == 404, path
        assert answer.headers["content-type"] == "application/problem+json"


def test_health_and_document(api: Server) -> None:
    client = api.client()
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()  # each read model's lag: see test_api_ops.py
    assert ready["status"] == "ready"
    assert set(ready) == {"status", "log_position", "max_lag_events", "projections"}
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    assert "/v1/jobs/{job_id}/receipt" in document["paths"]
    missing = client.get("/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    wrong = client.delete("/v1/jobs")
    assert wrong.status_code == 405
    assert "POST" in wrong.headers["Allow"]
    assert wrong.json()["type"].endswith("/method-not-allowed")
