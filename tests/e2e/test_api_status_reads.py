"""The status read's fast path (`api.reads.StatusDocs`: PostgreSQL, on the event loop) and the
API-key cache, over HTTP: same answers, tenant isolation, revocation at once in this process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import orjson
import pytest

from api.context import ApiState
from api.reads import ProjectionJobReads
from api.webhook_reads import WebhookReads
from jobledger.read_models import ReadModels
from tests.e2e.conftest import ADMIN_KEY, Server, job_body, make_tenant


@pytest.fixture
def frozen(service: Any) -> Iterator[ReadModels]:
    models = ReadModels(service)  # caught up by hand
    yield models
    models.close()


def api_state(server: Server) -> ApiState:
    state: ApiState = server.uvicorn.lifespan.state["api"]
    return state


def two_tenants(api_server: Any, frozen: ReadModels, service: Any) -> tuple[Any, ...]:
    """(reads, server, admin client, tenant "Acme", tenant "Other") over the frozen views."""
    reads = ProjectionJobReads(service.ledger, frozen.store, frozen.waiter)
    api = api_server(reads=reads)
    admin = api.client(ADMIN_KEY)
    return reads, api, admin, make_tenant(api, admin, "Acme"), make_tenant(api, admin, "Other")


def all_pages(client: Any, params: dict[str, Any], path: str = "/v1/jobs") -> list[bytes]:
    """The bodies of every page of the list at `path` with `params`, following
    `next_cursor`."""
    pages: list[bytes] = []
    cursor = None
    while True:
        page = client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        assert page.headers["content-type"] == "application/json"
        pages.append(page.content)
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return pages


def test_status_reads_answer_from_the_stored_row_and_keep_tenants_apart(
    api_server: Any, frozen: ReadModels, service: Any, database_url: str
) -> None:
    reads, api, admin, acme, other = two_tenants(api_server, frozen, service)
    created = acme.writer.post("/v1/jobs", json=job_body(), headers={"Idempotency-Key": "k"})
    job_id = created.json()["id"]
    frozen.catch_up()
    expected = orjson.loads(orjson.dumps(service.ledger.get_job(UUID(job_id)).status()))
    on_loop = api_state(api).status_docs is not None
    assert on_loop == database_url.startswith("postgresql")

    if on_loop:  # the threaded path must not be needed for these
        threaded = reads.get

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("answered by the threaded path")

        reads.get = refuse  # type: ignore[method-assign]
    for client in (acme.reader, acme.writer, admin):
        got = client.get(f"/v1/jobs/{job_id}")
        assert got.status_code == 200, got.text
        assert got.headers["content-type"] == "application/json"
        assert got.json() == expected
    if on_loop:
        reads.get = threaded  # type: ignore[method-assign]

    for path in (f"/v1/jobs/{job_id}", "/v1/jobs/00000000-0000-4000-8000-000000000000"):
        missing = other.reader.get(path)
        assert missing.status_code == 404, missing.text
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.json()["type"].endswith("/not-found")

    # read-your-writes still waits for (or goes around) a projection that is behind
    canceled = acme.writer.post(f"/v1/jobs/{job_id}/cancel", json={})
    position = int(canceled.headers["Ledger-Position"])
    assert acme.reader.get(f"/v1/jobs/{job_id}").json()["state"] == "queued"
    fresh = acme.reader.get(f"/v1/jobs/{job_id}", params={"min_position": position})
    assert fresh.json()["state"] == "canceled"


def test_a_key_revoked_here_is_refused_at_once_though_it_was_cached(
    api_server: Any, frozen: ReadModels, service: Any
) -> None:
    api = api_server(reads=ProjectionJobReads(service.ledger, frozen.store, frozen.waiter))
    admin = api.client(ADMIN_KEY)
    tenant = make_tenant(api, admin)
    for _ in range(2):
        assert tenant.reader.get("/v1/jobs").status_code == 200
    cache = api_state(api).authenticator.keys
    assert {who.key_id for who, _ in cache._entries.values()} >= {tenant.reader_key_id}

    revoked = admin.delete(f"/v1/tenants/{tenant.id}/keys/{tenant.reader_key_id}")
    assert revoked.status_code == 200, revoked.text
    refused = tenant.reader.get("/v1/jobs")
    assert refused.status_code == 401
    assert refused.json()["type"].endswith("/unauthenticated")
    assert tenant.writer.get("/v1/jobs").status_code == 200  # the tenant's other key works


def test_lists_on_the_loop_are_the_bytes_the_threaded_path_gives(
    api_server: Any, frozen: ReadModels, service: Any, database_url: str
) -> None:
    reads, api, admin, acme, other = two_tenants(api_server, frozen, service)
    for i in range(5):
        acme.writer.post("/v1/jobs", json=job_body(), headers={"Idempotency-Key": f"a{i}"})
    other.writer.post("/v1/jobs", json=job_body(), headers={"Idempotency-Key": "o"})
    first = acme.writer.post("/v1/jobs", json=job_body(), headers={"Idempotency-Key": "a0"})
    acme.writer.post(f"/v1/jobs/{first.json()['id']}/cancel", json={})
    frozen.catch_up()
    state = api_state(api)
    on_loop = state.status_docs is not None
    assert on_loop == database_url.startswith("postgresql")
    queries: list[tuple[Any, dict[str, Any]]] = [
        (acme.reader, {}),
        (acme.reader, {"limit": 2}),
        (acme.reader, {"state": "canceled"}),
        (acme.reader, {"state": "queued", "limit": 3}),
        (other.reader, {}),
        (admin, {"limit": 4}),
    ]
    threaded = reads.list
    if on_loop:  # the threaded path must not be needed for these

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("answered by the threaded path")

        reads.list = refuse  # type: ignore[method-assign]
    bodies = [all_pages(client, params) for client, params in queries]
    reads.list = threaded  # type: ignore[method-assign]
    assert [len(orjson.loads(b)["jobs"]) for b in bodies[0]] == [5]
    assert [len(orjson.loads(b)["jobs"]) for b in bodies[1]] == [2, 2, 1]
    assert [j["state"] for j in orjson.loads(bodies[2][0])["jobs"]] == ["canceled"]
    assert [len(orjson.loads(b)["jobs"]) for b in bodies[4]] == [1]  # its own job only
    bad = acme.reader.get("/v1/jobs", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 400, bad.text
    assert bad.headers["content-type"] == "application/problem+json"
    if not on_loop:
        return
    listed = state.status_docs.list

    async def threaded_only(*args: Any, **kwargs: Any) -> None:
        return None

    state.status_docs.list = threaded_only  # type: ignore[method-assign]
    try:
        for (client, params), expected in zip(queries, bodies, strict=True):
            assert all_pages(client, params) == expected, params
    finally:
        state.status_docs.list = listed  # type: ignore[method-assign]


def test_delivery_lists_on_the_loop_are_the_bytes_the_threaded_path_gives(
    api_server: Any, frozen: ReadModels, service: Any, database_url: str
) -> None:
    webhook_reads = WebhookReads(service.ledger, frozen.store)
    api = api_server(
        reads=ProjectionJobReads(service.ledger, frozen.store, frozen.waiter),
        webhook_reads=webhook_reads,
    )
    admin = api.client(ADMIN_KEY)
    acme, other = make_tenant(api, admin, "Acme"), make_tenant(api, admin, "Other")
    hook = {"url": "https://hooks.example.com/hook", "event_types": ["*"]}
    everything = acme.writer.post("/v1/endpoints", json=hook).json()
    outcomes = acme.writer.post(
        "/v1/endpoints", json={**hook, "event_types": ["job.canceled"]}
    ).json()
    other.writer.post("/v1/endpoints", json=hook)
    jobs = [
        acme.writer.post("/v1/jobs", json=job_body(), headers={"Idempotency-Key": f"a{i}"}).json()
        for i in range(4)
    ]
    other.writer.post("/v1/jobs", json=job_body(), headers={"Idempotency-Key": "o"})
    acme.writer.post(f"/v1/jobs/{jobs[0]['id']}/cancel", json={})
    frozen.catch_up()  # the fan-out makes the deliveries, the delivery queue lists them
    frozen.catch_up()
    state = api_state(api)
    on_loop = state.delivery_docs is not None
    assert on_loop == database_url.startswith("postgresql")
    queries: list[tuple[Any, str, dict[str, Any]]] = [
        (acme.reader, "/v1/deliveries", {}),
        (acme.reader, "/v1/deliveries", {"limit": 2}),
        (acme.reader, "/v1/deliveries", {"job_id": jobs[0]["id"]}),
        (acme.reader, "/v1/deliveries", {"endpoint_id": outcomes["id"]}),
        (acme.reader, "/v1/deliveries", {"state": "pending", "limit": 3}),
        (acme.reader, f"/v1/endpoints/{everything['id']}/deliveries", {"limit": 4}),
        (other.reader, "/v1/deliveries", {}),
        (admin, "/v1/deliveries", {"limit": 5}),
    ]
    threaded = webhook_reads.list_deliveries
    if on_loop:  # the threaded path must not be needed for these

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("answered by the threaded path")

        webhook_reads.list_deliveries = refuse  # type: ignore[method-assign]
    bodies = [all_pages(client, params, path) for client, path, params in queries]
    webhook_reads.list_deliveries = threaded  # type: ignore[method-assign]

    def listed(pages: list[bytes]) -> list[dict[str, Any]]:
        return [d for page in pages for d in orjson.loads(page)["deliveries"]]

    # 4 creations and a cancel to the catch-all endpoint, the cancel to the other one too
    assert len(listed(bodies[0])) == 6
    assert [len(orjson.loads(b)["deliveries"]) for b in bodies[1]] == [2, 2, 2]
    assert sorted(d["event_type"] for d in listed(bodies[2])) == [
        "job.canceled",  # to both endpoints
        "job.canceled",
        "job.queued",
    ]
    assert [d["event_type"] for d in listed(bodies[3])] == ["job.canceled"]
    assert all(d["state"] == "pending" for d in listed(bodies[4]))
    assert {d["endpoint_id"] for d in listed(bodies[5])} == {everything["id"]}
    assert len(listed(bodies[6])) == 1  # its own delivery only
    assert listed(bodies[0]) == [
        orjson.loads(
            orjson.dumps(service.ledger.get_delivery(UUID(d["id"]), tenant_id=None).describe())
        )
        for d in listed(bodies[0])
    ]
    bad = acme.reader.get("/v1/deliveries", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 400, bad.text
    assert bad.headers["content-type"] == "application/problem+json"
    if not on_loop:
        return
    on_the_loop = state.delivery_docs.list  # type: ignore[union-attr]

    async def threaded_only(*args: Any, **kwargs: Any) -> None:
        return None

    state.delivery_docs.list = threaded_only  # type: ignore[union-attr,method-assign]
    try:
        for (client, path, params), expected in zip(queries, bodies, strict=True):
            assert all_pages(client, params, path) == expected, (path, params)
    finally:
        state.delivery_docs.list = on_the_loop  # type: ignore[union-attr,method-assign]


def test_the_views_owner_answers_status_reads_from_memory_and_follows_each_change(
    api_server: Any, service: Any, database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("status documents are kept in memory on PostgreSQL only (DocCache)")
    models = ReadModels(service, keep_status_docs=True)  # as `ledger serve --role api` runs them
    models.start()
    try:
        docs = models.status_docs
        assert docs is not None
        reads = ProjectionJobReads(service.ledger, models.store, models.waiter, docs=docs)
        api = api_server(reads=reads)
        admin = api.client(ADMIN_KEY)
        acme, other = make_tenant(api, admin, "Acme"), make_tenant(api, admin, "Other")
        deadline = time.monotonic() + 20
        while not docs.following:  # (its follower starts in a thread of its own)
            assert time.monotonic() < deadline, "the status documents' follower did not start"
            time.sleep(0.01)
        created = acme.writer.post("/v1/jobs", json=job_body(), headers={"Idempotency-Key": "k"})
        job_id = created.json()["id"]
        assert models.waiter.wait(int(created.headers["Ledger-Position"]), 20)

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("read from the database")

        status_docs = api_state(api).status_docs
        assert status_docs is not None
        fetch_all, status_docs.rows.fetch_all = status_docs.rows.fetch_all, refuse  # type: ignore[method-assign]
        threaded, reads.get = reads.get, refuse  # type: ignore[method-assign]
        hits = docs.hits
        for client in (acme.reader, admin):
            got = client.get(f"/v1/jobs/{job_id}")
            assert got.status_code == 200, got.text
            expected = service.ledger.get_job(UUID(job_id)).status()
            assert got.json() == orjson.loads(orjson.dumps(expected))
        reads.get = threaded  # type: ignore[method-assign]  # (the cancel's answer reads it)
        canceled = acme.writer.post(f"/v1/jobs/{job_id}/cancel", json={})
        position = int(canceled.headers["Ledger-Position"])
        assert models.waiter.wait(position, 20)  # (else the read below waits in a thread)
        fresh = acme.reader.get(f"/v1/jobs/{job_id}", params={"min_position": position})
        assert fresh.status_code == 200, fresh.text
        assert fresh.json()["state"] == "canceled"  # the change, kept as the view wrote it
        assert acme.reader.get(f"/v1/jobs/{job_id}").json()["state"] == "canceled"
        assert docs.hits == hits + 4

        status_docs.rows.fetch_all = fetch_all  # type: ignore[method-assign]
        missing = other.reader.get(f"/v1/jobs/{job_id}")  # kept, but not this tenant's
        assert missing.status_code == 404, missing.text
        assert missing.json()["type"].endswith("/not-found")
        scraped = api.client().get("/metrics").text  # (open: no LEDGER_METRICS_TOKEN)
        assert f'ledger_status_reads_total{{source="memory"}} {float(docs.hits)}' in scraped
        assert f'ledger_status_reads_total{{source="database"}} {float(docs.misses)}' in scraped
        assert docs.misses >= 1  # the other tenant's read
        assert f"ledger_status_docs_kept {float(len(docs))}" in scraped
    finally:
        models.close()
