"""Concurrency over HTTP: parallel idempotent creates, and a slow request that stalls no other.

No timing assertion: a request is held inside its ledger call on a `threading.Event`, and the
test shows other requests completing while it is provably still in flight.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any
from uuid import UUID

import httpx

from api.reads import AggregateJobReads
from tests.e2e.conftest import ADMIN_KEY, Server, Tenant, job_body, make_tenant

PARALLEL = 24


def test_parallel_creates_with_one_key_make_one_job(api: Server, tenant: Tenant) -> None:
    token = tenant.writer.headers["Authorization"]
    barrier = threading.Barrier(PARALLEL)

    def create(_: int) -> httpx.Response:
        with httpx.Client(base_url=api.base_url, timeout=60) as client:
            barrier.wait()
            return client.post(
                "/v1/jobs",
                json=job_body(),
                headers={"Authorization": token, "Idempotency-Key": "same-key"},
            )

    with ThreadPoolExecutor(PARALLEL) as pool:
        answers = list(pool.map(create, range(PARALLEL)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * (PARALLEL - 1) + [201], [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    job_id = UUID(answers[0].json()["id"])
    assert len(api.ledger.job_events(job_id)) == 1  # exactly one JobCreated
    assert [j["id"] for j in tenant.reader.get("/v1/jobs").json()["jobs"]] == [str(job_id)]


class HeldReads(AggregateJobReads):
    """Reads that hold `get` of one job inside the worker thread until released."""

    def __init__(self, ledger: Any) -> None:
        super().__init__(ledger)
        self.held: UUID | None = None
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()

    def get(
        self,
        tenant_id: str | None,
        job_id: UUID,
        as_of: datetime | None = None,
        min_position: int | None = None,
    ) -> dict[str, Any]:
        if job_id == self.held:
            self.entered.release()
            assert self.release.wait(timeout=60), "never released"
        return super().get(tenant_id, job_id, as_of, min_position)


def test_a_slow_request_does_not_stall_others(
    api_server: Any, api: Server, admin: httpx.Client
) -> None:
    reads = HeldReads(api.ledger)
    server = api_server(reads=reads)
    tenant = make_tenant(server, server.client(ADMIN_KEY))
    held_job = tenant.writer.post("/v1/jobs", json=job_body(), headers={"Idempotency-Key": "h"})
    reads.held = UUID(held_job.json()["id"])

    results: dict[str, httpx.Response] = {}

    def slow() -> None:
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            results["slow"] = client.get(
                f"/v1/jobs/{reads.held}", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
            )

    thread = threading.Thread(target=slow)
    thread.start()
    assert reads.entered.acquire(timeout=30)  # the slow request is inside the ledger call now
    try:
        for n in range(10):  # reads, writes and lists all complete meanwhile
            created = tenant.writer.post(
                "/v1/jobs", json=job_body(), headers={"Idempotency-Key": f"other-{n}"}
            )
            assert created.status_code == 201
            got = tenant.reader.get(f"/v1/jobs/{created.json()['id']}")
            assert got.status_code == 200
        assert tenant.reader.get("/v1/jobs").status_code == 200
        assert thread.is_alive()
        assert "slow" not in results  # ... while the slow one is still in flight
    finally:
        reads.release.set()
        thread.join(timeout=30)
    assert results["slow"].status_code == 200
    assert results["slow"].json()["id"] == str(reads.held)


def test_event_loop_stays_free_when_every_ledger_thread_is_busy(
    api_server: Any, api: Server
) -> None:
    reads = HeldReads(api.ledger)
    server = api_server(reads=reads, threads=2)
    tenant = make_tenant(server, server.client(ADMIN_KEY))
    reads.held = UUID(
        tenant.writer.post("/v1/jobs", json=job_body(), headers={"Idempotency-Key": "h"}).json()[
            "id"
        ]
    )
    results: list[httpx.Response] = []

    def slow() -> None:
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            results.append(
                client.get(
                    f"/v1/jobs/{reads.held}", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
                )
            )

    threads = [threading.Thread(target=slow) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(2):  # both ledger threads are held; the third request waits for one
            assert reads.entered.acquire(timeout=30)
        plain = server.client()
        for _ in range(5):  # the event loop still answers what needs no ledger thread
            assert plain.get("/healthz").status_code == 200
            assert plain.get("/openapi.json").status_code == 200
        assert plain.get("/v1/jobs").status_code == 401  # auth needs no thread to refuse
        assert results == []
    finally:
        reads.release.set()
        for t in threads:
            t.join(timeout=30)
    assert [r.status_code for r in results] == [200, 200, 200]
