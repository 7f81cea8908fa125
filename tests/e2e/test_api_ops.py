"""`GET /v1/ops/stuck`, `GET /metrics` and `/readyz`'s projection-lag check, on a real server.

Job times come from the service's `ManualClock` (the server reads the same clock), so a job is
held past each threshold by moving the clock, not by waiting. Tests that need the read models
held still use a `frozen` set (not started; caught up by hand); the others run them in the
background as `ledger serve` does and poll the answer with a deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api.config import ApiConfig
from api.reads import ProjectionJobReads
from jobledger.bootstrap import api_config
from jobledger.read_models import ReadModels
from jobledger.settings import Settings
from ledger.application import JobLedger
from ledger.clock import ManualClock
from ledger.job import AttemptFailure
from ledger.retry import RetryPolicy
from projections.registry import tracked_names
from tests.e2e.conftest import ADMIN_KEY, Server, job_body, log_end, make_tenant, start_server

STUCK_ENV = {
    "LEDGER_STUCK_QUEUED_SECONDS": "600",
    "LEDGER_STUCK_OVERDUE_SECONDS": "120",
    "LEDGER_STUCK_LEASE_GRACE_SECONDS": "30",
    "LEDGER_STUCK_MAX_RETRYING_ATTEMPTS": "2",
}
METRICS_TOKEN = "scrape-token-0123456789"


@pytest.fixture
def frozen(service: Any) -> Iterator[ReadModels]:
    models = ReadModels(service)  # not started: moves only when the test says so
    yield models
    models.close()


def frozen_server(api_server: Callable[..., Server], frozen: ReadModels, **config: Any) -> Server:
    reads = ProjectionJobReads(frozen.ledger, frozen.store, frozen.waiter, wait_seconds=0.2)
    return api_server(reads=reads, **config)


def create_job(client: httpx.Client, key: str, **overrides: Any) -> str:
    created = client.post("/v1/jobs", json=job_body(**overrides), headers={"Idempotency-Key": key})
    assert created.status_code == 201, created.text
    job_id: str = created.json()["id"]
    return job_id


def reasons(report: dict[str, Any]) -> set[tuple[str, str]]:
    return {(s["job_id"], s["reason"]) for s in report["stuck"]}


def stuck(client: httpx.Client, **params: Any) -> dict[str, Any]:
    answer = client.get("/v1/ops/stuck", params=params)
    assert answer.status_code == 200, answer.text
    report: dict[str, Any] = answer.json()
    return report


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def lag(got: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return got[("ledger_projection_lag_events", (("projection", name),))]


def fail(ledger: JobLedger, job_id: Any, attempt: int, code: str, retryable: bool) -> None:
    ledger.record_failure(
        job_id,
        attempt=attempt,
        failure=AttemptFailure(code, f"simulated {code}", retryable),
        actor="worker:w",
    )


# -- the stuck report --


def test_stuck_report_names_a_job_held_past_each_threshold(
    api_server: Callable[..., Server], frozen: ReadModels, clock: ManualClock
) -> None:
    thresholds = api_config(Settings.from_env(STUCK_ENV)).stuck_thresholds
    api = frozen_server(api_server, frozen, stuck_thresholds=thresholds)
    ledger = api.ledger
    ledger.retry_policy = RetryPolicy(max_attempts=10, base_seconds=1, cap_seconds=1)
    admin = api.client(ADMIN_KEY)
    acme = make_tenant(api, admin, "Acme")
    other = make_tenant(api, admin, "Other")
    start = clock.now()

    queued = create_job(acme.writer, "queued")
    overdue = create_job(acme.writer, "overdue")
    ledger.schedule(UUID(overdue))  # due at once, never started
    lost = create_job(acme.writer, "lost", account_id="acct-2")
    ledger.schedule(UUID(lost))
    ledger.start_attempt(UUID(lost), worker_id="worker:gone", lease_seconds=60)
    flaky = create_job(acme.writer, "flaky", account_id="acct-2")
    ledger.schedule(UUID(flaky))
    for attempt in (1, 2, 3):
        clock.advance(5)
        ledger.start_attempt(UUID(flaky), worker_id="worker:w", lease_seconds=60)
        fail(ledger, UUID(flaky), attempt, "server_error", retryable=True)
    theirs = create_job(other.writer, "theirs")
    frozen.catch_up()

    # t+15 s: only the attempt count is over its threshold
    report = stuck(acme.reader)
    assert reasons(report) == {(flaky, "retrying_too_often")}
    assert report["tenant_id"] == acme.id
    assert report["thresholds"] == {
        "queued_seconds": 600.0,
        "overdue_seconds": 120.0,
        "lease_grace_seconds": 30.0,
        "max_retrying_attempts": 2,
    }
    # t+95 s: the lease (t+60 s) plus its grace (30 s) has passed
    clock.set(start + timedelta(seconds=95))
    assert reasons(stuck(acme.reader)) == {(flaky, "retrying_too_often"), (lost, "lease_expired")}
    # t+125 s: the scheduled job has been due (since t) for longer than 120 s
    clock.advance(30)
    assert reasons(stuck(acme.reader)) == {
        (flaky, "retrying_too_often"),
        (lost, "lease_expired"),
        (overdue, "not_started"),
    }
    # t+700 s: queued for longer than 600 s; the retry due at about t+16 s never started either
    clock.set(start + timedelta(seconds=700))
    report = stuck(acme.reader)
    assert reasons(report) == {
        (flaky, "retrying_too_often"),
        (flaky, "not_started"),
        (lost, "lease_expired"),
        (overdue, "not_started"),
        (queued, "queued_too_long"),
    }
    since = [datetime.fromisoformat(s["since"]) for s in report["stuck"]]
    assert since == sorted(since)
    gone = next(s for s in report["stuck"] if s["reason"] == "lease_expired")
    assert gone["tenant_id"] == acme.id
    assert gone["state"] == "running"
    assert gone["account_id"] == "acct-2"
    assert gone["since"] == gone["lease_expires_at"]
    assert gone["age_seconds"] == 640.0  # 700 s after the start, the lease ran out at 60 s
    assert "worker may be gone" in gone["why"]
    assert "more than 2 attempts" in next(
        s["why"] for s in report["stuck"] if s["reason"] == "retrying_too_often"
    )
    assert report["counts_by_state"] == {
        "queued": 1,
        "scheduled": 1,
        "running": 1,
        "failed_retrying": 1,
    }
    assert report["counts_by_account"] == {
        "acct-1": {"queued": 1, "scheduled": 1},
        "acct-2": {"running": 1, "failed_retrying": 1},
    }
    assert report["oldest_queued_age_seconds"] == 700.0
    assert report["generated_at"] == "2026-01-01T00:11:40Z"

    # the writer sees the same; another tenant's queued job is in neither
    assert stuck(acme.writer)["stuck"] == report["stuck"]
    assert theirs not in {s["job_id"] for s in report["stuck"]}
    theirs_only = stuck(other.reader)
    assert reasons(theirs_only) == {(theirs, "queued_too_long")}
    assert theirs_only["counts_by_state"] == {"queued": 1}

    # admin: every tenant, or the one asked for
    everyone = stuck(admin)
    assert everyone["tenant_id"] is None
    assert reasons(everyone) == reasons(report) | {(theirs, "queued_too_long")}
    assert stuck(admin, tenant_id=other.id)["stuck"] == theirs_only["stuck"]
    assert stuck(admin, tenant_id=acme.id.upper())["stuck"] == report["stuck"]

    # a tenant key may name only its own tenant
    assert stuck(acme.reader, tenant_id=acme.id)["stuck"] == report["stuck"]
    refused = acme.reader.get("/v1/ops/stuck", params={"tenant_id": other.id})
    assert refused.status_code == 403
    assert refused.json()["type"].endswith("/forbidden")

    # limit keeps the oldest entries
    two = stuck(acme.reader, limit=2)["stuck"]
    assert two == report["stuck"][:2]


def test_stuck_report_refuses_bad_parameters_and_anonymous_callers(
    api_server: Callable[..., Server], frozen: ReadModels
) -> None:
    api = frozen_server(api_server, frozen)
    tenant = make_tenant(api, api.client(ADMIN_KEY))
    for params, name in (
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"tenant_id": "acme"}, "tenant_id"),
        ({"state": "queued"}, "state"),
    ):
        bad = tenant.reader.get("/v1/ops/stuck", params=params)
        assert bad.status_code == 400, (params, bad.text)
        assert bad.json()["invalid_params"][0]["name"] == name
    assert tenant.reader.get("/v1/ops/stuck", params={"limit": "1000"}).status_code == 200
    anonymous = api.client().get("/v1/ops/stuck")
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")


# -- metrics --


def test_metrics_count_jobs_outcomes_and_lag_from_the_read_models(
    api: Server, clock: ManualClock
) -> None:
    admin = api.client(ADMIN_KEY)
    tenant = make_tenant(api, admin)
    ledger = api.ledger
    published, retrying, terminal, _queued = (
        UUID(create_job(tenant.writer, f"m{i}")) for i in range(4)
    )
    for job_id in (published, retrying, terminal):
        ledger.schedule(job_id)
        ledger.start_attempt(job_id, worker_id="worker:w", lease_seconds=60)
    ledger.record_success(published, attempt=1, external_ref="pin-1", receipt={}, actor="worker:w")
    fail(ledger, retrying, 1, "rate_limited", retryable=True)
    fail(ledger, terminal, 1, "invalid_media", retryable=False)
    clock.advance(1000)
    scraper = api.client()  # no key: /metrics is open without LEDGER_METRICS_TOKEN

    deadline = time.monotonic() + 15
    while True:
        answer = scraper.get("/metrics")
        assert answer.status_code == 200, answer.text
        got = samples(answer.text)
        if all(lag(got, name) == 0 for name in tracked_names()):
            break
        assert time.monotonic() < deadline, "the read models did not catch up"
        time.sleep(0.05)
    # A scrape is not one snapshot: its gauges read the views one after another, so the scrape
    # that saw the last lag reach 0 may have counted stuck jobs a moment earlier. Nothing is
    # written from here on: the next scrape reads caught-up views throughout.
    answer = scraper.get("/metrics")
    got = samples(answer.text)

    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    jobs = {labels[0][1]: v for (name, labels), v in got.items() if name == "ledger_jobs"}
    assert jobs == {
        "queued": 1,
        "scheduled": 0,
        "running": 0,
        "published": 1,
        "failed_retrying": 1,
        "failed_terminal": 1,
        "canceled": 0,
    }
    outcomes = {
        (dict(labels)["outcome"], dict(labels)["error_code"]): v
        for (name, labels), v in got.items()
        if name == "ledger_attempt_outcomes_total"
    }
    assert outcomes == {
        ("published", ""): 1,
        ("retrying", "rate_limited"): 1,
        ("failed", "invalid_media"): 1,
    }
    assert got[("ledger_oldest_queued_age_seconds", ())] == 1000.0
    stuck_by_reason = {
        labels[0][1]: v for (name, labels), v in got.items() if name == "ledger_stuck_jobs"
    }
    # defaults: queued > 300 s; the retry (due within 30 s) not started after 300 s
    assert stuck_by_reason == {
        "queued_too_long": 1,
        "not_started": 1,
        "lease_expired": 0,
        "retrying_too_often": 0,
    }
    for name in tracked_names():
        assert got[("ledger_projection_lag_seconds", (("projection", name),))] == 0
    assert got[("process_resident_memory_bytes", ())] > 0
    families = {f.name: f.type for f in text_string_to_metric_families(answer.text)}
    assert families["ledger_jobs"] == "gauge"
    assert families["ledger_attempt_outcomes"] == "counter"


def test_metrics_token_guards_metrics_when_set(api_server: Callable[..., Server]) -> None:
    api = api_server(metrics_token=METRICS_TOKEN)
    for headers in ({}, {"Authorization": f"Bearer {ADMIN_KEY}"}, {"Authorization": "Basic x"}):
        refused = api.client().get("/metrics", headers=headers)
        assert refused.status_code == 401, headers
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    scraped = api.client(METRICS_TOKEN).get("/metrics")
    assert scraped.status_code == 200
    assert ("ledger_jobs", (("state", "queued"),)) in samples(scraped.text)
    assert api.client().get("/healthz").status_code == 200  # nothing else changes


# -- readiness --


def test_readyz_fails_while_a_projection_lags_and_recovers_after_catch_up(
    api_server: Callable[..., Server], frozen: ReadModels
) -> None:
    api = frozen_server(api_server, frozen, ready_max_lag_events=3)
    tenant = make_tenant(api, api.client(ADMIN_KEY))
    probe = api.client()
    frozen.catch_up()
    ready = probe.get("/readyz")
    assert ready.status_code == 200, ready.text
    head = log_end(api.ledger)
    assert ready.json() == {
        "status": "ready",
        "log_position": head,
        "max_lag_events": 3,
        "projections": {name: {"position": head, "lag_events": 0} for name in tracked_names()},
    }

    for i in range(3):  # three log entries behind: at the bound, still ready
        create_job(tenant.writer, f"r{i}")
    at_bound = probe.get("/readyz")
    assert at_bound.status_code == 200
    assert {p["lag_events"] for p in at_bound.json()["projections"].values()} == {3}

    create_job(tenant.writer, "r3")
    lagging = probe.get("/readyz")
    assert lagging.status_code == 503
    assert lagging.headers["content-type"] == "application/problem+json"
    assert lagging.headers["Retry-After"] == "5"
    body = lagging.json()
    assert body["type"] == "https://job-ledger.dev/problems/projection-lag"
    assert body["log_position"] == head + 4
    assert body["projections"] == {
        name: {"position": head, "lag_events": 4} for name in tracked_names()
    }
    assert "job_status by 4" in body["detail"]
    metrics = samples(probe.get("/metrics").text)
    for name in tracked_names():
        assert lag(metrics, name) == 4
        assert metrics[("ledger_projection_lag_seconds", (("projection", name),))] > 0

    frozen.start()  # the runners follow the log again, in the background
    deadline = time.monotonic() + 15
    while (answer := probe.get("/readyz")).status_code != 200:
        assert answer.json()["type"].endswith("/projection-lag")
        assert time.monotonic() < deadline, "readiness did not recover"
        time.sleep(0.05)
    assert answer.json()["projections"] == {
        name: {"position": head + 4, "lag_events": 0} for name in tracked_names()
    }


def test_an_app_without_read_models_checks_only_the_store(service: Any) -> None:
    server = start_server(
        create_app(service.ledger, ApiConfig(admin_key=ADMIN_KEY)), service.ledger
    )
    try:
        ready = server.client().get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["projections"] == {}
        for path in ("/metrics", "/v1/ops/stuck"):
            missing = server.client(ADMIN_KEY).get(path)
            assert missing.status_code == 404
            assert "needs read models" in missing.json()["detail"]
    finally:
        server.stop()
