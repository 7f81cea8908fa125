"""`ledger projections status` and `ledger projections rebuild`, run as the installed command on
a store that already holds jobs: the lag it reports, the progress bar, and a rebuild that gives
back exactly the rows the live projections had (after the live rows were damaged)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from jobledger.read_models import ReadModels
from ledger.application import JobLedger
from ledger.job import AttemptFailure
from projections.registry import PROJECTIONS, tracked_names
from storage.sql import SqlStore
from tests.conftest import make_new_job
from tests.e2e.conftest import log_end
from tests.e2e.test_cli import run

NAMES = sorted(PROJECTIONS)


@pytest.fixture
def store(service: Any) -> Iterator[SqlStore]:
    s = SqlStore(service.database)
    yield s
    s.close()


def rows(store: SqlStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every registered projection's live table (named like the projection), in a fixed order."""
    with store.transaction() as tx:
        return {
            name: sorted((tuple(r) for r in tx.execute(f"SELECT * FROM {name}")), key=repr)
            for name in NAMES
        }


def make_history(ledger: JobLedger) -> None:
    """Jobs of two tenants in every kind of end state, so both projections have rows."""
    ids = [
        ledger.create_job(
            make_new_job(account_id=f"acct-{i % 2}"),
            tenant_id=f"t{i % 2}",
            idempotency_key=f"k{i}",
            actor="key:k",
        ).job.id
        for i in range(6)
    ]
    published, retrying, terminal, canceled = ids[:4]
    for job_id in (published, retrying, terminal):
        ledger.schedule(job_id)
        ledger.start_attempt(job_id, worker_id="worker:w", lease_seconds=60)
    ledger.record_success(published, attempt=1, external_ref="pin-1", receipt={}, actor="w")
    for job_id, code, retryable in ((retrying, "rate_limited", True), (terminal, "x", False)):
        failure = AttemptFailure(code, "simulated", retryable)
        ledger.record_failure(job_id, attempt=1, failure=failure, actor="worker:w")
    ledger.cancel(canceled, actor="key:k", reason="withdrawn")


def status(database_url: str) -> list[dict[str, Any]]:
    done = run(database_url, "projections", "status", "--json")
    assert done.returncode == 0, done.stderr
    found: list[dict[str, Any]] = json.loads(done.stdout)
    return found


def test_status_reports_lag_and_rebuild_restores_the_live_rows(
    database_url: str, service: Any, store: SqlStore
) -> None:
    make_history(service.ledger)
    head = log_end(service.ledger)

    before = status(database_url)  # nothing has run yet: every projection is the whole log behind
    assert [r["name"] for r in before] == tracked_names()  # the views, then the fan-out
    for r in before:
        assert (r["position"], r["log_position"], r["lag_events"]) == (0, head, head)

    live = ReadModels(service)
    try:
        live.catch_up()
    finally:
        live.close()
    live_rows = rows(store)
    assert len(live_rows["job_status"]) == 6
    assert len(live_rows["attempt_outcomes"]) == 3
    for r in status(database_url):
        assert (r["position"], r["lag_events"]) == (head, 0)
        assert r["seconds_since_update"] is not None
    text = run(database_url, "projections", "status")
    assert text.returncode == 0, text.stderr
    assert re.search(
        rf"^job_status\s+position\s+{head} of {head} \(lag 0 events\)$", text.stdout, re.M
    )

    with store.transaction() as tx:  # damage the live rows: a rebuild must not keep any of it
        tx.execute("DELETE FROM job_status WHERE state = 'published'")
        tx.execute("UPDATE job_status SET state = 'running' WHERE state = 'canceled'")
        tx.execute("UPDATE attempt_outcomes SET attempts = attempts + 100")
    assert rows(store) != live_rows

    rebuilt = run(database_url, "projections", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    for name in NAMES:
        # the progress bar on stderr ends full (its "\r" reads as a line break in text mode)
        bar = rf"^{name}\s+\[#{{30}}\] {head}/{head} \(100%\) [\d,]+ ev/s ETA 0\.0s$"
        assert re.search(bar, rebuilt.stderr, re.M), rebuilt.stderr
        assert f"{name}: rebuilt up to log position {head} in " in rebuilt.stdout
    assert rows(store) == live_rows
    for r in status(database_url):
        assert (r["position"], r["lag_events"]) == (head, 0)

    with store.transaction() as tx:
        tx.execute("DELETE FROM job_status")
    one = run(database_url, "projections", "rebuild", "job_status", "--json")
    assert one.returncode == 0, one.stderr
    result = json.loads(one.stdout)
    assert [(r["name"], r["position"]) for r in result] == [("job_status", head)]
    assert result[0]["seconds"] >= 0
    assert "[" not in one.stderr  # --json prints no progress bar
    assert rows(store) == live_rows


def test_rebuild_of_an_unknown_projection_is_a_usage_error(database_url: str) -> None:
    done = run(database_url, "projections", "rebuild", "no_such_view")
    assert done.returncode == 2
    assert "invalid choice" in done.stderr
