"""Status and lists come from the job-status projection; `min_position` gives read-your-writes.

The read models here are caught up by hand, never in the background, so the test can hold the
projection behind the ledger and show both behaviours deterministically."""

from __future__ import annotations

import pytest

from api.reads import ProjectionJobReads
from jobledger.read_models import ReadModels
from tests.e2e.conftest import ADMIN_KEY, job_body, make_tenant


@pytest.fixture
def frozen(service):
    models = ReadModels(service)  # not started: moves only when the test says so
    yield models
    models.close()


def test_reads_come_from_the_projection_and_min_position_waits_for_a_write(
    api_server, frozen, service
) -> None:
    api = api_server(
        reads=ProjectionJobReads(service.ledger, frozen.store, frozen.waiter, wait_seconds=0.2)
    )
    tenant = make_tenant(api, api.client(ADMIN_KEY))
    created = tenant.writer.post("/v1/jobs", json=job_body(), headers={"Idempotency-Key": "k1"})
    assert created.status_code == 201
    job_id = created.json()["id"]
    frozen.catch_up()

    canceled = tenant.writer.post(f"/v1/jobs/{job_id}/cancel", json={"reason": "client asked"})
    assert canceled.status_code == 200
    position = int(canceled.headers["Ledger-Position"])

    stale = tenant.reader.get(f"/v1/jobs/{job_id}")
    assert stale.json()["state"] == "queued"  # the view has not applied the cancel yet
    listed = tenant.reader.get("/v1/jobs")
    assert [j["state"] for j in listed.json()["jobs"]] == ["queued"]

    fresh = tenant.reader.get(f"/v1/jobs/{job_id}", params={"min_position": position})
    assert fresh.status_code == 200
    assert fresh.json()["state"] == "canceled"  # the view is behind: answered from the log

    frozen.catch_up()
    assert tenant.reader.get(f"/v1/jobs/{job_id}").json()["state"] == "canceled"
    listed = tenant.reader.get("/v1/jobs", params={"min_position": position})
    assert [j["state"] for j in listed.json()["jobs"]] == ["canceled"]


def test_a_job_not_projected_yet_is_found_not_404(api_server, frozen, service) -> None:
    api = api_server(reads=ProjectionJobReads(service.ledger, frozen.store, frozen.waiter))
    tenant = make_tenant(api, api.client(ADMIN_KEY))
    created = tenant.writer.post("/v1/jobs", json=job_body(), headers={"Idempotency-Key": "k"})
    job_id = created.json()["id"]
    got = tenant.reader.get(f"/v1/jobs/{job_id}")
    assert got.status_code == 200
    assert got.json()["id"] == job_id
    other = make_tenant(api, api.client(ADMIN_KEY), name="Other")
    assert other.reader.get(f"/v1/jobs/{job_id}").status_code == 404


def test_bad_min_position_is_a_400_naming_it(api, tenant) -> None:
    bad = tenant.reader.get("/v1/jobs", params={"min_position": "-3"})
    assert bad.status_code == 400
    assert bad.json()["invalid_params"][0]["name"] == "min_position"


def test_a_position_past_the_log_end_reads_at_the_end_without_waiting(
    api_server, frozen, service
) -> None:
    # A wait this long would outlast the client's timeout: the answer shows it did not wait.
    api = api_server(
        reads=ProjectionJobReads(service.ledger, frozen.store, frozen.waiter, wait_seconds=3600)
    )
    tenant = make_tenant(api, api.client(ADMIN_KEY))
    created = tenant.writer.post("/v1/jobs", json=job_body(), headers={"Idempotency-Key": "k"})
    frozen.catch_up()
    made_up = int(created.headers["Ledger-Position"]) + 1_000_000
    got = tenant.reader.get(f"/v1/jobs/{created.json()['id']}", params={"min_position": made_up})
    assert got.status_code == 200
    assert got.json()["state"] == "queued"
