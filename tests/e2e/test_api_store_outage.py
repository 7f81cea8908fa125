"""A real PostgreSQL outage (a proxy in front of it is cut): 503 with Retry-After on reads and
writes, nothing half-written, and the service recovers by itself when the store is back."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from api.app import create_app
from api.config import ApiConfig
from ledger.application import JobLedger
from ledger.clock import ManualClock
from storage.breaker import guard_ledger
from storage.config import migrate, parse_database_url
from tests.e2e.conftest import Server, job_body, log_end, start_server
from tests.e2e.store_proxy import StoreProxy

ADMIN = "outage-admin-key-0123456789"


@pytest.fixture
def outage_api(postgres_url: str, clock: ManualClock) -> Iterator[tuple[Server, StoreProxy]]:
    database = parse_database_url(postgres_url)
    migrate(database)
    proxy = StoreProxy((database.host, database.port))
    env = {
        **database.eventsourcing_env(),
        "POSTGRES_PORT": str(proxy.port),
        # The breaker (storage/breaker.py) fails fast whatever this is; keep the pool's own
        # waits short too.
        "POSTGRES_CONNECT_TIMEOUT": "1",
    }
    ledger = JobLedger(env, clock=clock)
    guard_ledger(ledger)  # as `ledger serve` does
    server = start_server(create_app(ledger, ApiConfig(admin_key=ADMIN)), ledger)
    try:
        yield server, proxy
    finally:
        server.stop()
        proxy.close()
        ledger.close()


def test_store_outage_is_503_then_recovers(outage_api: tuple[Server, StoreProxy]) -> None:
    server, proxy = outage_api
    admin = server.client(ADMIN)
    tenant = admin.post("/v1/tenants", json={"name": "Acme"}).json()
    writer = server.client(tenant["key"]["token"])
    assert writer.post("/v1/jobs", json=job_body(), headers={"Idempotency-Key": "a"}).is_success
    before = admin.get("/v1/jobs").json()["jobs"]
    end = log_end(server.ledger)

    proxy.cut()
    for answer in (
        admin.get("/v1/jobs"),  # a read of the log itself
        admin.post("/v1/tenants", json={"name": "Never"}),  # a write
    ):
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == "5"
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["type"].endswith("/store-unavailable")

    proxy.restore()
    deadline = time.monotonic() + 90
    while server.client().get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the service did not recover"
        time.sleep(0.5)
    assert log_end(server.ledger) == end  # the refused write left nothing behind
    assert admin.get("/v1/jobs").json()["jobs"] == before
    again = writer.post("/v1/jobs", json=job_body(), headers={"Idempotency-Key": "b"})
    assert again.status_code == 201
    assert server.ledger.verify().ok
