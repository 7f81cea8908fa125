"""`GET /v1/audit/verify` (SPEC section 9): admins get the same report as `ledger verify`; an
event altered behind the ledger's back is named; tenant keys are refused."""

from __future__ import annotations

from uuid import UUID

import httpx

from tests.e2e.conftest import Server, Tenant, job_body
from tests.integration.test_audit import RawLog


def test_admin_verifies_the_log_and_sees_the_first_broken_event(
    api: Server, admin: httpx.Client, tenant: Tenant, database_url: str
) -> None:
    created = tenant.writer.post("/v1/jobs", json=job_body(), headers={"Idempotency-Key": "a"})
    job_id = created.json()["id"]
    tenant.writer.post(f"/v1/jobs/{job_id}/cancel", json={"reason": "audit test"})

    answer = admin.get("/v1/audit/verify")
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["ok"] is True
    assert report["first_break"] is None
    assert report == api.ledger.verify().as_dict()
    assert report["events"] >= 4  # tenant, key, job created, job canceled

    raw = RawLog(database_url)
    try:
        state = raw.state(UUID(job_id), 1)
        assert b"A cat" in state
        raw.set_state(UUID(job_id), 1, state.replace(b"A cat", b"A dog"))
    finally:
        raw.close()
    broken = admin.get("/v1/audit/verify").json()
    assert broken["ok"] is False
    assert broken["first_break"]["job_id"] == job_id
    assert broken["first_break"]["version"] == 1
    assert "altered" in broken["first_break"]["reason"]


def test_tenant_keys_may_not_verify(tenant: Tenant, api: Server) -> None:
    for client in (tenant.writer, tenant.reader):
        answer = client.get("/v1/audit/verify")
        assert answer.status_code == 403
        assert answer.headers["content-type"] == "application/problem+json"
    assert api.client().get("/v1/audit/verify").status_code == 401
