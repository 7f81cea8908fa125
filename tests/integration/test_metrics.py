"""/metrics content computed from the projections (both stores)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from ledger.job import AttemptFailure
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
    for r in runners:
        r.setup()
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
    finally:
        store.close()
