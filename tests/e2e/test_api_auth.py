"""Tenancy and roles over HTTP: the role matrix, 401/403/404, key issue, list and revoke."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import httpx
import pytest

from tests.e2e.conftest import Server, Tenant, job_body, log_end, make_tenant

# (method, path template, json body or None) for every /v1 operation; {job} is a job of the
# acting tenant, {tenant} that tenant, {key} a spare key of it.
JOB_READS = [
    ("GET", "/v1/jobs", None),
    ("GET", "/v1/jobs/{job}", None),
    ("GET", "/v1/jobs/{job}/events", None),
    ("GET", "/v1/jobs/{job}/receipt", None),
]
JOB_CHANGES = [
    ("POST", "/v1/jobs/{job}/cancel", {"reason": "matrix"}),
    ("POST", "/v1/jobs/{job}/requeue", None),
]
CREATE_JOB = [("POST", "/v1/jobs", "job")]
TENANCY = [
    ("POST", "/v1/tenants", {"name": "Matrix"}),
    ("GET", "/v1/tenants/{tenant}", None),
    ("POST", "/v1/tenants/{tenant}/keys", {"role": "reader"}),
    ("GET", "/v1/tenants/{tenant}/keys", None),
    ("GET", "/v1/tenants/{tenant}/keys/{key}", None),
    ("DELETE", "/v1/tenants/{tenant}/keys/{key}", None),
]
EVERY = JOB_READS + JOB_CHANGES + CREATE_JOB + TENANCY

# role -> operations it may do (the rest answer 403)
ALLOWED = {
    "admin": JOB_READS + JOB_CHANGES + TENANCY,
    "writer": JOB_READS + JOB_CHANGES + CREATE_JOB,
    "reader": JOB_READS,
}


def send(client: httpx.Client, op: tuple[str, str, Any], ids: dict[str, str]) -> httpx.Response:
    method, template, body = op
    path = template.format(**ids)
    headers = {}
    if body == "job":
        body = job_body()
        headers["Idempotency-Key"] = f"matrix-{ids['job']}"
    return client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize("role", ["admin", "writer", "reader"])
def test_role_matrix(
    api: Server, tenant: Tenant, admin: httpx.Client, role: str, database_url: str
) -> None:
    clients = {"admin": admin, "writer": tenant.writer, "reader": tenant.reader}
    client = clients[role]
    for n, op in enumerate(EVERY):
        job = tenant.writer.post(
            "/v1/jobs", json=job_body(), headers={"Idempotency-Key": f"{role}-{n}"}
        ).json()
        spare = admin.post(f"/v1/tenants/{tenant.id}/keys", json={"role": "reader"}).json()
        ids = {"job": job["id"], "tenant": tenant.id, "key": spare["id"]}
        end = log_end(api.ledger)
        answer = send(client, op, ids)
        if op in ALLOWED[role]:
            assert answer.status_code in (200, 201, 409), (role, op, answer.text)
            if op == JOB_CHANGES[1]:  # requeue of a queued job: allowed, but not in this state
                assert answer.status_code == 409
        else:
            assert answer.status_code == 403, (role, op, answer.text)
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["type"].endswith("/forbidden")
            assert log_end(api.ledger) == end  # nothing written


def test_another_tenants_objects_are_404(api: Server, tenant: Tenant, admin: httpx.Client) -> None:
    other = make_tenant(api, admin, "Other")
    job = tenant.writer.post("/v1/jobs", json=job_body(), headers={"Idempotency-Key": "a"}).json()
    end = log_end(api.ledger)
    for op in JOB_READS[1:] + JOB_CHANGES:
        answer = send(other.writer, op, {"job": job["id"]})
        assert answer.status_code == 404, op
        assert answer.json()["type"].endswith("/not-found")
    assert log_end(api.ledger) == end
    # The same idempotency key in another tenant is another job.
    mine = other.writer.post("/v1/jobs", json=job_body(), headers={"Idempotency-Key": "a"})
    assert mine.status_code == 201
    assert mine.json()["id"] != job["id"]


def test_missing_wrong_and_revoked_keys_are_401(
    api: Server, tenant: Tenant, admin: httpx.Client
) -> None:
    anonymous = api.client()
    token = tenant.writer.headers["Authorization"].removeprefix("Bearer ")
    key_id = UUID(tenant.writer_key_id)
    wrong_secret = f"jlk_{key_id.hex}_{'A' * 43}"
    for headers in (
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer jlk_nonsense"},
        {"Authorization": f"Bearer {wrong_secret}"},
        {"Authorization": "Bearer test-admin-key-0123456789-not"},
    ):
        answer = anonymous.get("/v1/jobs", headers=headers)
        assert answer.status_code == 401, headers
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert answer.json()["type"].endswith("/unauthenticated")
        assert token not in answer.text

    revoked = admin.delete(f"/v1/tenants/{tenant.id}/keys/{tenant.writer_key_id}")
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    end = log_end(api.ledger)
    answer = tenant.writer.post("/v1/jobs", json=job_body(), headers={"Idempotency-Key": "x"})
    assert answer.status_code == 401
    assert log_end(api.ledger) == end
    # revoking again changes nothing
    again = admin.delete(f"/v1/tenants/{tenant.id}/keys/{tenant.writer_key_id}")
    assert again.status_code == 200
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]
    assert log_end(api.ledger) == end
    # the reader key of the same tenant still works
    assert tenant.reader.get("/v1/jobs").status_code == 200


def test_keys_are_issued_listed_and_never_shown_again(
    api: Server, tenant: Tenant, admin: httpx.Client
) -> None:
    issued = admin.post(
        f"/v1/tenants/{tenant.id}/keys", json={"role": "writer", "label": "ci pipeline"}
    )
    assert issued.status_code == 201
    key = issued.json()
    assert key["token"].startswith(f"jlk_{UUID(key['id']).hex}_")
    assert key["label"] == "ci pipeline"
    assert issued.headers["Location"] == f"/v1/tenants/{tenant.id}/keys/{key['id']}"
    assert api.client(key["token"]).get("/v1/jobs").status_code == 200

    listed = admin.get(f"/v1/tenants/{tenant.id}/keys")
    assert listed.status_code == 200
    keys = listed.json()["keys"]
    assert [k["id"] for k in keys] == [tenant.writer_key_id, tenant.reader_key_id, key["id"]]
    assert [k["role"] for k in keys] == ["writer", "reader", "writer"]
    assert key["token"] not in listed.text
    assert "secret" not in listed.text
    first = admin.get(f"/v1/tenants/{tenant.id}/keys", params={"limit": 2}).json()
    assert len(first["keys"]) == 2
    rest = admin.get(
        f"/v1/tenants/{tenant.id}/keys", params={"limit": 2, "cursor": first["next_cursor"]}
    ).json()
    assert [k["id"] for k in rest["keys"]] == [key["id"]]
    assert rest["next_cursor"] is None

    one = admin.get(f"/v1/tenants/{tenant.id}/keys/{key['id']}")
    assert one.status_code == 200
    assert "token" not in one.json()

    tenant_view = admin.get(f"/v1/tenants/{tenant.id}").json()
    assert tenant_view["keys"] == 3
    assert tenant_view["active_keys"] == 3

    # An admin role cannot be given to a tenant's key; another tenant's key is 404 here.
    bad = admin.post(f"/v1/tenants/{tenant.id}/keys", json={"role": "admin"})
    assert bad.status_code == 422
    assert bad.json()["invalid_params"][0]["name"] == "role"
    other = make_tenant(api, admin, "Other")
    foreign = admin.delete(f"/v1/tenants/{other.id}/keys/{key['id']}")
    assert foreign.status_code == 404
    assert admin.get(f"/v1/tenants/{UUID(int=7)}/keys").status_code == 404


def test_admin_cannot_create_jobs_but_sees_and_changes_every_tenants(
    api: Server, tenant: Tenant, admin: httpx.Client
) -> None:
    refused = admin.post("/v1/jobs", json=job_body(), headers={"Idempotency-Key": "adm"})
    assert refused.status_code == 403
    assert "writer key" in refused.json()["detail"]
    job = tenant.writer.post("/v1/jobs", json=job_body(), headers={"Idempotency-Key": "a"}).json()
    assert admin.get(f"/v1/jobs/{job['id']}").status_code == 200
    canceled = admin.post(f"/v1/jobs/{job['id']}/cancel", json={"reason": "support"})
    assert canceled.status_code == 200
    last = api.ledger.job_events(UUID(job["id"]))[-1]
    assert last.actor == "key:bootstrap-admin"


def test_tenancy_events_are_hash_chained_and_verify(
    api: Server, tenant: Tenant, admin: httpx.Client
) -> None:
    admin.delete(f"/v1/tenants/{tenant.id}/keys/{tenant.reader_key_id}")
    report = api.ledger.verify()
    assert report.ok, report.summary()
    # tenant: created, 2 keys issued, 1 revoked; keys: 2 created, 1 revoked
    assert report.events == 7
