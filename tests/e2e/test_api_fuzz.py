"""Schema-driven fuzzing: schemathesis generates requests from the served /openapi.json and sends
them to the live server; no answer may be a 5xx or differ from the document (status code,
content type, headers, body schema). Bounded: a fixed number of examples per operation,
derandomised, so the run is repeatable and takes seconds.

Half of the cases of an operation with a path id use an id that exists (a real job, tenant,
key, webhook endpoint or delivery), so success responses are checked against their schemas too,
not only 404s. Deleting an endpoint uses a spare one, so the other endpoint operations keep
finding theirs. Test events go through the real sender over a mock transport (every target
answers 204), so no request leaves the machine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from jobledger.bootstrap import Service
from jobledger.delivery_role import make_sender
from storage.sql import SqlStore
from tests.e2e.conftest import ADMIN_KEY, Server, Tenant, job_body

# Quick mode in `make test`; `LEDGER_FUZZ_EXAMPLES=200` (make soak) for a longer search.
MAX_EXAMPLES = int(os.environ.get("LEDGER_FUZZ_EXAMPLES", "15"))
UNPARAMETERISED = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/v1/audit/verify"}
CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def api(api_server: Callable[..., Server], service: Service) -> Iterator[Server]:
    """The default server, plus a sender for `POST /v1/endpoints/{id}/test`."""
    store = SqlStore(service.database)
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(204)))
    yield api_server(webhook_tester=make_sender(service, store, client=client))
    store.close()


def _known_ids(tenant: Tenant, admin: httpx.Client) -> dict[str, str]:
    endpoints = [
        tenant.writer.post(
            "/v1/endpoints", json={"url": "https://hooks.example.com/fz", "event_types": ["*"]}
        )
        for _ in range(2)
    ]
    assert [e.status_code for e in endpoints] == [201, 201]
    created = tenant.writer.post("/v1/jobs", json=job_body(), headers={"Idempotency-Key": "fz"})
    assert created.status_code == 201
    spare = admin.post(f"/v1/tenants/{tenant.id}/keys", json={"role": "reader"})
    assert spare.status_code == 201
    return {
        "job_id": created.json()["id"],
        "tenant_id": tenant.id,
        "key_id": spare.json()["id"],
        "endpoint_id": endpoints[0].json()["id"],
        "spare_endpoint_id": endpoints[1].json()["id"],
        "delivery_id": _first_delivery(tenant),
    }


def _first_delivery(tenant: Tenant) -> str:
    """The job's `job.queued` delivery, which the delivery projector makes shortly."""
    deadline = time.monotonic() + 15
    while not (found := tenant.writer.get("/v1/deliveries").json()["deliveries"]):
        assert time.monotonic() < deadline, "no delivery was made"
        time.sleep(0.05)
    return str(found[0]["id"])


def _fuzz(api: Server, tenant: Tenant, admin: httpx.Client, mode: GenerationMode) -> int:
    writer_token = tenant.writer.headers["Authorization"]
    known = _known_ids(tenant, admin)
    schema = schemathesis.openapi.from_url(f"{api.base_url}/openapi.json")
    # The key is sent by the test itself (a real one per operation); generating or negating
    # the Authorization header too would only produce requests the test then overrides.
    schema.config.generation.update(with_security_parameters=False)
    checks: list[Any] = list(CONFORMANCE)
    if mode is GenerationMode.NEGATIVE:
        checks.append(negative_data_rejection)
    count = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        path = operation.path
        if mode is GenerationMode.NEGATIVE and path in UNPARAMETERISED:
            continue  # nothing in such a request can be made invalid
        token = f"Bearer {ADMIN_KEY}" if path.startswith("/v1/tenants") else writer_token
        fixed = {k: v for k, v in known.items() if "{" + k + "}" in path}
        if operation.method.upper() == "DELETE" and "endpoint_id" in fixed:
            fixed["endpoint_id"] = known["spare_endpoint_id"]
        strategy = operation.as_strategy(generation_mode=mode)
        if fixed:
            strategy = st.one_of(
                strategy, operation.as_strategy(generation_mode=mode, path_parameters=fixed)
            )

        count += _run(api.base_url, token, strategy, checks)
    return count


def _run(base_url: str, token: str, strategy: Any, checks: list[Any]) -> int:
    sent = 0

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def check(case: Any) -> None:
        nonlocal sent
        response = case.call(base_url=base_url, headers={"Authorization": token})
        sent += 1
        case.validate_response(response, checks=checks)

    check()
    return sent


def test_fuzz_positive(api: Server, tenant: Tenant, admin: httpx.Client) -> None:
    count = _fuzz(api, tenant, admin, GenerationMode.POSITIVE)
    assert count >= 100  # the run really sent requests to every operation
    # the spare key may have been revoked, but the writer key still works: auth never broke
    assert tenant.writer.get("/v1/jobs").status_code == 200


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_fuzz_negative(api: Server, tenant: Tenant, admin: httpx.Client) -> None:
    count = _fuzz(api, tenant, admin, GenerationMode.NEGATIVE)
    assert count >= 50
    assert api.ledger.verify().ok
