"""`select_after`, the projection runners' read of the log (both stores): the head and what
follows a position up to it, filtered by topic, as `max_notification_id` then
`select_notifications` give them (PostgreSQL: from one statement)."""

from __future__ import annotations

from ledger.application import JobLedger
from ledger.job import Job
from ledger.tenancy import Tenant
from tests.conftest import make_new_job


def expected(ledger: JobLedger, start: int, limit: int, topics: list[str]) -> tuple[int, list]:
    head = ledger.recorder.max_notification_id() or 0
    if head <= start:
        return head, []
    notes = ledger.recorder.select_notifications(
        start, limit, stop=head, topics=topics, inclusive_of_start=False
    )
    return head, [(n.id, n.originator_id, n.originator_version, n.topic, n.state) for n in notes]


def read(ledger: JobLedger, start: int, limit: int, topics: list[str]) -> tuple[int, list]:
    head, notes = ledger.recorder.select_after(start, limit, topics)
    return head, [(n.id, n.originator_id, n.originator_version, n.topic, n.state) for n in notes]


def test_an_empty_log_has_head_zero_and_nothing_after_it(ledger: JobLedger) -> None:
    assert ledger.recorder.select_after(0, 10, [Job.JobCreated.TOPIC]) == (0, [])
    assert ledger.recorder.select_after(0, 10) == (0, [])


def test_select_after_gives_what_the_two_library_reads_give(ledger: JobLedger) -> None:
    ledger.create_tenant("one", actor="admin:test")
    for i in range(5):
        ledger.create_job(make_new_job(), tenant_id="t", idempotency_key=f"k{i}", actor="a")
        ledger.create_tenant(f"tenant {i}", actor="admin:test")
    head = ledger.recorder.max_notification_id()
    jobs, tenants = [Job.JobCreated.TOPIC], [Tenant.TenantCreated.TOPIC]
    cases = [
        (0, 100, jobs),  # every job event: the head is past the last of them
        (0, 3, jobs),  # a full read: its last event is not the head
        (4, 100, tenants),  # after a position, another topic
        (0, 100, [*jobs, *tenants]),
        (0, 4, []),  # no topics: every event
        (head, 100, jobs),  # nothing after the head
        (head - 1, 100, jobs),  # the head is a tenant's event: no job after head - 1
        (head - 1, 100, tenants),
    ]
    for start, limit, topics in cases:
        assert read(ledger, start, limit, topics) == expected(ledger, start, limit, topics), (
            start,
            limit,
            topics,
        )
    found_head, notes = read(ledger, 0, 3, jobs)
    assert found_head == head
    assert [n[3] for n in notes] == jobs * 3
    assert notes[-1][0] < head
    assert read(ledger, head - 1, 100, jobs) == (head, [])
    assert len(read(ledger, 0, 100, jobs)[1]) == 5
