"""Webhooks through `ledger serve` as a real process (role `all`): an endpoint registered over
HTTP gets a test event from the API's own sender at once, and a job's events from the
delivery role, signed so that its secret verifies them; the delivery API shows them."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from delivery import signing
from tests.conftest import TEST_SECRET_KEY
from tests.e2e.conftest import job_body
from tests.fakes.receiver import Receiver, running_receiver
from tests.serving import serving

ADMIN_KEY = "serve-admin-key-0123456789"


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[str]:
    env = {
        **os.environ,
        "LEDGER_DATABASE_URL": database_url,
        "LEDGER_ADMIN_KEY": ADMIN_KEY,
        "LEDGER_SECRET_KEY": TEST_SECRET_KEY,
        "LEDGER_ALLOW_PRIVATE_TARGETS": "1",  # the receiver listens on 127.0.0.1
        "LEDGER_AUDIT_CHECKPOINT_SECONDS": "0",
    }
    with serving(env, tmp_path) as served:
        yield served.base_url


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as started:
        yield started


def test_webhooks_through_ledger_serve(served: str, receiver: Receiver) -> None:
    admin = httpx.Client(base_url=served, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    tenant = admin.post("/v1/tenants", json={"name": "Acme"}).json()
    writer = httpx.Client(
        base_url=served, headers={"Authorization": f"Bearer {tenant['key']['token']}"}, timeout=30
    )
    created = writer.post(
        "/v1/endpoints",
        json={"url": receiver.url("/hooks"), "event_types": ["job.published", "webhook.test"]},
    )
    assert created.status_code == 201, created.text
    endpoint = created.json()

    tested = writer.post(f"/v1/endpoints/{endpoint['id']}/test")
    assert tested.status_code == 200, tested.text
    assert tested.json()["succeeded"] is True
    assert tested.json()["delivery"]["state"] == "succeeded"
    [test_event] = receiver.wait_for(1, path="/hooks")
    signing.verify(endpoint["secret"], test_event.headers, test_event.body, now=time.time())
    assert test_event.json()["type"] == "webhook.test"

    job = writer.post("/v1/jobs", json=job_body(), headers={"Idempotency-Key": "serve-hook"})
    assert job.status_code == 201, job.text
    received = receiver.wait_for(2, path="/hooks", timeout=30)
    published = received[1]
    signing.verify(endpoint["secret"], published.headers, published.body, now=time.time())
    message = published.json()
    assert message["type"] == "job.published"
    assert message["data"]["job_id"] == job.json()["id"]
    assert message["data"]["state"] == "published"

    deadline = time.monotonic() + 15
    while True:
        found = writer.get(f"/v1/deliveries?job_id={job.json()['id']}").json()["deliveries"]
        if found and found[0]["state"] == "succeeded":
            break
        assert time.monotonic() < deadline, found
        time.sleep(0.1)
    assert found[0]["webhook_id"] == published.headers["webhook-id"]
    detail = writer.get(f"/v1/deliveries/{found[0]['id']}").json()
    assert detail["attempt_log"][0]["receipt"]["status_code"] == 200
    health = writer.get(f"/v1/endpoints/{endpoint['id']}/health").json()
    assert health["state"] == "healthy"
    admin.close()
    writer.close()
