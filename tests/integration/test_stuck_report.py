"""The stuck-job report names a job held past each threshold (with an injected clock)."""

from __future__ import annotations

from datetime import datetime

import pytest

from ledger.job import AttemptFailure
from ledger.retry import RetryPolicy
from projections.job_status import JobStatusProjection
from projections.runner import ProjectionRunner
from projections.stuck import StuckThresholds, stuck_report
from tests.conftest import make_new_job

THRESHOLDS = StuckThresholds(
    queued_seconds=600, overdue_seconds=120, lease_grace_seconds=0, max_retrying_attempts=2
)


def test_each_threshold_names_its_job(ledger, store, clock) -> None:
    ledger.retry_policy = RetryPolicy(max_attempts=10, base_seconds=1, cap_seconds=1)

    def create(key: str, account: str = "a1"):
        new = make_new_job(account_id=account)
        return ledger.create_job(new, tenant_id="t1", idempotency_key=key, actor="key:k").job.id

    queued = create("queued")
    overdue = create("overdue")
    ledger.schedule(overdue)
    lost = create("lost", account="a2")
    ledger.schedule(lost)
    ledger.start_attempt(lost, worker_id="worker:gone", lease_seconds=30)
    flaky = create("flaky", account="a2")
    ledger.schedule(flaky)
    for attempt in (1, 2, 3):
        clock.advance(5)
        ledger.start_attempt(flaky, worker_id="worker:w", lease_seconds=30)
        ledger.record_failure(
            flaky,
            attempt=attempt,
            failure=AttemptFailure("server_error", "502", True),
            actor="worker:w",
        )
    fresh = create("fresh")
    other_tenant = ledger.create_job(
        make_new_job(), tenant_id="t2", idempotency_key="x", actor="key:k"
    ).job.id
    runner = ProjectionRunner(ledger, store, JobStatusProjection(ledger))
    runner.setup()
    runner.catch_up()

    with store.transaction() as tx:
        early = stuck_report(tx, tenant_id="t1", now=clock.now(), thresholds=THRESHOLDS)
    assert {s["reason"] for s in early["stuck"]} == {"retrying_too_often"}

    clock.advance(700)
    with store.transaction() as tx:
        report = stuck_report(tx, tenant_id="t1", now=clock.now(), thresholds=THRESHOLDS)
    reasons = {(s["job_id"], s["reason"]) for s in report["stuck"]}
    assert (str(queued), "queued_too_long") in reasons
    assert (str(fresh), "queued_too_long") in reasons
    assert (str(overdue), "not_started") in reasons
    assert (str(lost), "lease_expired") in reasons
    assert (str(flaky), "retrying_too_often") in reasons
    assert (str(flaky), "not_started") in reasons  # its retry is due and nothing picked it up
    assert str(other_tenant) not in {s["job_id"] for s in report["stuck"]}
    assert report["counts_by_state"] == {
        "queued": 2,
        "scheduled": 1,
        "running": 1,
        "failed_retrying": 1,
    }
    assert report["counts_by_account"]["a2"] == {"running": 1, "failed_retrying": 1}
    assert report["oldest_queued_age_seconds"] == pytest.approx(715.0)
    lost_row = next(s for s in report["stuck"] if s["reason"] == "lease_expired")
    assert "worker may be gone" in lost_row["why"]
    since = [datetime.fromisoformat(s["since"]) for s in report["stuck"]]
    assert since == sorted(since)  # by time: "...:15Z" is before "...:15.65Z"

    with store.transaction() as tx:
        everyone = stuck_report(tx, tenant_id=None, now=clock.now(), thresholds=THRESHOLDS)
    assert str(other_tenant) in {s["job_id"] for s in everyone["stuck"]}
    assert everyone["counts_by_state"]["queued"] == 3  # the other tenant's too
    assert sum(c.get("queued", 0) for c in everyone["counts_by_account"].values()) == 3
    # t1's two queued jobs and its scheduled one (t2's job is another account's)
    assert everyone["counts_by_account"]["a1"] == {"queued": 2, "scheduled": 1}
