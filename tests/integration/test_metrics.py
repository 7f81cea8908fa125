"""/metrics content computed from the projections (both stores)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from ledger.endpoint import EndpointSettings
from ledger.job import AttemptFailure
from projections.delivery_fanout import DeliveryFanout
from projections.metrics import LedgerCollector, registry_for, render
from projections.registry import PROJECTIONS, live
from projections.runner import ProjectionRunner
from projections.stuck import StuckThresholds
from storage.sql import SqlStore
from tests.conftest import make_new_job


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_report_states_outcomes_and_lag(service, ledger, clock) -> None:
    store = SqlStore(service.database)
    runners = [ProjectionRunner(ledger, store, live(ledger, name)) for name in sorted(PROJECTIONS)]
    runners.insert(0, ProjectionRunner(ledger, store, DeliveryFanout(ledger)))
    for r in runners:
        r.setup()
    healthy, failing = (
        ledger.register_endpoint(
            "t",
            EndpointSettings(url=f"https://hooks.example.com/{n}", event_types=types),
            actor="a",
        ).endpoint
        for n, types in (("ok", ("job.published",)), ("bad", ("job.queued",)))
    )
    ids = [
        ledger.create_job(make_new_job(), tenant_id="t", idempotency_key=f"k{i}", actor="a").job.id
        for i in range(3)
    ]
    for job_id, fail in zip(ids[:2], [None, "rate_limited"], strict=True):
        ledger.schedule(job_id)
        ledger.start_attempt(job_id, worker_id="worker:w", lease_seconds=30)
        if fail:
            ledger.record_failure(
                job_id, attempt=1, failure=AttemptFailure(fail, "429", True), actor="worker:w"
            )
        else:
            ledger.record_success(
                job_id, attempt=1, external_ref="p1", receipt={}, actor="worker:w"
            )
    for r in runners:
        r.catch_up()
    queued = [
        n.originator_id
        for n in ledger.recorder.select_notifications(
            0, 100, topics=["job-ledger:DeliveryCreated:v1"]
        )
        if ledger.get_delivery(n.originator_id, tenant_id=None).event_type == "job.queued"
    ]
    assert len(queued) == 3
    for delivery_id in queued[:2]:  # two failures in a row, one dead-lettered
        ledger.record_delivery_attempt(
            delivery_id,
            attempt=1,
            succeeded=False,
            receipt={"status_code": 500},
            next_attempt_at=None if delivery_id == queued[0] else clock.now(),
            actor="d",
        )
    for r in runners:
        r.catch_up()
    clock.advance(1000)
    collector = LedgerCollector(
        store,
        lambda: ledger.recorder.max_notification_id() or 0,
        sorted(PROJECTIONS),
        StuckThresholds(queued_seconds=60),
        now=clock.now,
    )
    try:
        got = samples(render(registry_for(collector)).decode())
        assert got[("ledger_jobs", (("state", "published"),))] == 1
        assert got[("ledger_jobs", (("state", "failed_retrying"),))] == 1
        assert got[("ledger_jobs", (("state", "queued"),))] == 1
        assert got[("ledger_jobs", (("state", "canceled"),))] == 0
        assert got[("ledger_oldest_queued_age_seconds", ())] == 1000.0
        assert got[("ledger_stuck_jobs", (("reason", "queued_too_long"),))] == 1
        key = (
            "ledger_attempt_outcomes_total",
            (("error_code", "rate_limited"), ("outcome", "retrying")),
        )
        assert got[key] == 1
        assert got[("ledger_projection_lag_events", (("projection", "job_status"),))] == 0
        ledger.cancel(ids[2], actor="key:a")
        lagging = samples(render(registry_for(collector)).decode())
        assert lagging[("ledger_projection_lag_events", (("projection", "job_status"),))] == 1
        assert any(name.startswith("process_") for name, _ in got)
        deliveries = {
            labels: v for (name, labels), v in got.items() if name == "ledger_webhook_deliveries"
        }
        assert deliveries == {
            (("endpoint_id", str(failing.id)), ("state", "dead_lettered")): 1,
            (("endpoint_id", str(failing.id)), ("state", "pending")): 2,
            (("endpoint_id", str(healthy.id)), ("state", "pending")): 1,
        }
        assert got[("ledger_webhook_endpoints", (("health", "degraded"),))] == 1
        assert got[("ledger_webhook_endpoints", (("health", "healthy"),))] == 1
        key = ("ledger_webhook_endpoint_consecutive_failures", (("endpoint_id", str(failing.id)),))
        assert got[key] == 2
    finally:
        store.close()
