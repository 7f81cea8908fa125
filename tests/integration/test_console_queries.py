"""The console's reads over the read models (`api.console.queries`), on both stores."""

from __future__ import annotations

from api.console import queries
from ledger.job import AttemptFailure
from projections.job_status import JobStatusProjection
from projections.runner import ProjectionRunner
from tests.conftest import make_new_job

WORKER = "worker:w"


def finish(ledger, clock, job_id, *, published: bool) -> None:
    clock.advance(10)
    ledger.schedule(job_id)
    ledger.start_attempt(job_id, worker_id=WORKER, lease_seconds=30)
    if published:
        ledger.record_success(job_id, attempt=1, external_ref="pin", receipt={}, actor=WORKER)
    else:
        failure = AttemptFailure("invalid_media", "bad image", retryable=False)
        ledger.record_failure(job_id, attempt=1, failure=failure, actor=WORKER)


def test_outcomes_are_the_last_finished_first_and_counts_are_the_jobs_in_each_state(
    ledger, store, clock
) -> None:
    def create(key: str, tenant: str = "t1"):
        return ledger.create_job(
            make_new_job(), tenant_id=tenant, idempotency_key=key, actor="key:k"
        ).job.id

    a, b, c, d, waiting = create("a"), create("b"), create("c"), create("d", "t2"), create("w")
    finish(ledger, clock, c, published=True)  # created last of the three, finished first
    finish(ledger, clock, a, published=False)
    finish(ledger, clock, d, published=True)
    finish(ledger, clock, b, published=True)
    runner = ProjectionRunner(ledger, store, JobStatusProjection(ledger))
    runner.setup()
    runner.catch_up()
    with store.transaction() as tx:
        mine = queries.outcomes(tx, "t1")
        everyone = queries.outcomes(tx, None)
        latest = queries.outcomes(tx, "t1", limit=2)
        counts = queries.counts_by_state(tx, "t1")
    assert [row["job_id"] for row in mine] == [str(b), str(a), str(c)]
    assert [row["state"] for row in mine] == ["published", "failed_terminal", "published"]
    assert [row["job_id"] for row in everyone] == [str(b), str(d), str(a), str(c)]
    assert [row["job_id"] for row in latest] == [str(b), str(a)]
    assert set(mine[0]) == {
        "job_id",
        "tenant_id",
        "state",
        "account_id",
        "board_id",
        "updated_at",
        "attempts",
        "doc",
    }
    assert counts == {
        "queued": 1,
        "scheduled": 0,
        "running": 0,
        "failed_retrying": 0,
        "published": 2,
        "failed_terminal": 1,
        "canceled": 0,
    }
    assert str(waiting) not in {row["job_id"] for row in everyone}
