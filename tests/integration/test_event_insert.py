"""The PostgreSQL event insert (`storage.recorder.TopicNotifyingRecorder.insert_events`): one
statement calling the function `migrate` makes, which must keep the library's guarantee that
a reader tailing the log never passes over an event that commits later."""

from __future__ import annotations

import threading
from uuid import uuid4

import pytest
from eventsourcing.persistence import StoredEvent

from jobledger.bootstrap import Service
from storage.recorder import INSERT_FUNCTION_ARGUMENTS, TopicNotifyingRecorder
from tests.conftest import make_new_job

pytestmark = pytest.mark.postgres

WRITERS = 8
WRITES_EACH = 150


@pytest.fixture
def service(postgres_service: Service) -> Service:
    return postgres_service


def _recorder(service) -> TopicNotifyingRecorder:
    recorder = service.ledger.recorder
    assert isinstance(recorder, TopicNotifyingRecorder)
    return recorder


def _drop_function(service) -> None:
    recorder = _recorder(service)
    with recorder.datastore.get_connection() as conn:
        name = recorder.insert_function.as_string(conn)
        conn.execute(f"DROP FUNCTION {name}({INSERT_FUNCTION_ARGUMENTS})")


def test_writes_go_through_the_function_and_without_it_as_the_library_writes(service) -> None:
    """A schema restored from an earlier release's dump has no function: writes go the
    library's way, and nothing is lost or written twice on the way."""
    ledger = service.ledger
    recorder = _recorder(service)
    first = ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="k0", actor="key:a")
    assert recorder._has_insert_function is True
    _drop_function(service)
    later = [
        ledger.create_job(make_new_job(), tenant_id="t", idempotency_key=f"k{i}", actor="key:a")
        for i in (1, 2)
    ]
    assert recorder._has_insert_function is False  # the first of them found it gone
    positions = [c.position for c in (first, *later)]
    assert positions == sorted(positions)
    stored = recorder.select_notifications(0, 100)
    assert [n.id for n in stored] == positions
    assert {ledger.get_job(c.job.id).idempotency_key for c in later} == {"k1", "k2"}


def test_a_reader_tailing_the_log_misses_nothing_under_concurrent_writers(service) -> None:
    """The library's own database function skips the table lock, and a reader then passed
    over events that committed after it had read past their ids (../shared EVENTSOURCING.md:
    33-75 of 10k, with 8 writers)."""
    recorder = _recorder(service)
    done = threading.Event()
    seen: list[int] = []

    def tail() -> None:
        last = 0
        while True:
            finished = done.is_set()
            batch = recorder.select_notifications(last, 500, inclusive_of_start=False)
            seen.extend(n.id for n in batch)
            if batch:
                last = batch[-1].id
            elif finished:
                return

    def write(w: int) -> None:  # straight to the recorder: each thread is its own writer
        for i in range(WRITES_EACH):
            recorder.insert_events(
                [
                    StoredEvent(uuid4(), 1, "job-ledger:JobCreated:v1", b"{}")
                    for _ in range(i % 3 + 1)
                ]
            )

    reader = threading.Thread(target=tail)
    reader.start()
    writers = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    reader.join()
    stored = [n.id for n in recorder.select_notifications(0, 10 * WRITERS * WRITES_EACH)]
    assert len(stored) == WRITERS * sum(i % 3 + 1 for i in range(WRITES_EACH))
    assert seen == stored
