"""Jobs by state over time (the console's chart) equals counts recomputed from the raw log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ledger.job import TRANSITIONS, JobState
from projections.runner import ProjectionRunner
from projections.state_history import JobStateHistoryProjection, hour_of, state_history
from storage.sql import SqlStore
from tests.integration.test_job_status_projection import random_workload


def oracle(ledger, tenant: str | None) -> dict[str, dict[str, int]]:
    """hour -> counts at the end of that hour, from every job event in log order."""
    states: dict[str, tuple[str, str]] = {}
    at_end: dict[str, dict[str, int]] = {}
    for note in ledger.recorder.select_notifications(0, 1_000_000):
        event = ledger.mapper.to_domain_event(note)
        name = type(event).__name__
        if name not in TRANSITIONS:
            continue
        job = str(event.originator_id)
        owner = event.tenant_id if name == "JobCreated" else states[job][0]
        states[job] = (owner, str(TRANSITIONS[name][1]))
        counts = {str(s): 0 for s in JobState}
        for who, state in states.values():
            if tenant is None or who == tenant:
                counts[state] += 1
        at_end[hour_of(event.timestamp)] = counts
    return at_end


@pytest.mark.parametrize("batch_size", [1, 7])
def test_counts_at_the_end_of_each_hour_match_the_log(ledger, service, clock, batch_size) -> None:
    """Batches of one event, and of 7 that often span hours (the workload's clock steps up to
    4000 s); a restart between the two workloads."""
    store = SqlStore(service.database)
    try:
        projection = JobStateHistoryProjection()
        runner = ProjectionRunner(ledger, store, projection, batch_size=batch_size)
        runner.setup()
        random_workload(ledger, clock, seed=31, jobs=15)  # clock steps of up to 4000 s
        runner.catch_up()
        projection.forget()  # as after a restart: the counts are read back from the view
        random_workload(ledger, clock, seed=32, jobs=10)
        runner.catch_up()
        now = clock.now() + timedelta(hours=2)  # two quiet hours at the end carry forward
        for tenant in ("t1", "t2", None):
            expected = oracle(ledger, tenant)
            hours_with_events = sorted(expected)
            assert len(hours_with_events) > 3
            # from before the first event, and from each later hour with events (what came
            # before the window carries into it, each state from the last hour that changed it)
            for since in hours_with_events:
                first = datetime.strptime(since, "%Y-%m-%dT%H").replace(tzinfo=UTC)
                hours = int((now - first).total_seconds() // 3600) + 1
                if since == hours_with_events[0]:
                    hours += 2  # two quiet hours before the first event
                with store.transaction() as tx:
                    series = state_history(tx, tenant, now=now, hours=hours)
                earlier = [h for h in hours_with_events if h < series[0][0].strftime("%Y-%m-%dT%H")]
                last: dict[str, int] = expected[earlier[-1]] if earlier else {}
                checked = 0
                for at, counts in series:
                    key = at.strftime("%Y-%m-%dT%H")
                    if key in expected:
                        last = expected[key]
                        checked += 1
                    assert {s: n for s, n in counts.items() if n} == {
                        s: n for s, n in last.items() if n
                    }, (tenant, since, key)
                assert checked == len([h for h in hours_with_events if h >= since])
                assert sum(series[-1][1].values()) > 0
    finally:
        store.close()
