"""A process starting while others run (PostgreSQL): its set-up of the read models takes no lock
the running owners need, so it neither waits for them nor deadlocks with them.

Before, every start-up ran `CREATE INDEX IF NOT EXISTS` (PostgreSQL takes the table's SHARE lock
before it sees the index exists) and then inserted the tracking row (which waits for an owner's
uncommitted batch). An owner mid-batch holds its tracking row and next writes the view: the two
deadlocked, and a restarted role logged start-up retries (the crash matrix's "start-up retries").
"""

from __future__ import annotations

import threading

import pytest

from jobledger.bootstrap import Service
from projections.delivery_queue import DeliveryQueueProjection
from projections.runner import TRACKING_TABLE, ProjectionRunner
from storage.sql import SqlStore

pytestmark = pytest.mark.postgres


@pytest.fixture
def service(postgres_service: Service) -> Service:
    return postgres_service


def test_set_up_beside_an_owner_mid_batch_neither_waits_nor_deadlocks(service: Service) -> None:
    store = SqlStore(service.database)
    owner = ProjectionRunner(service.ledger, store, DeliveryQueueProjection(service.ledger))
    owner.setup()
    mid_batch = store.transaction()
    tx = mid_batch.__enter__()  # the owner's batch: its tracking row first, then the view
    tx.execute(f"UPDATE {TRACKING_TABLE} SET position = position WHERE name = 'delivery_queue'")

    errors: list[BaseException] = []

    def start_another_process() -> None:
        starting = SqlStore(service.database)
        try:
            runner = ProjectionRunner(
                service.ledger, starting, DeliveryQueueProjection(service.ledger)
            )
            runner.setup()
        except BaseException as error:
            errors.append(error)
        finally:
            starting.close()

    starting = threading.Thread(target=start_another_process)
    starting.start()
    starting.join(timeout=15)
    finished_while_the_batch_was_open = not starting.is_alive()
    # the owner goes on writing its view, then commits
    tx.execute("SET LOCAL lock_timeout = '10s'")
    tx.execute("SELECT count(*) FROM delivery_queue").fetchone()
    tx.execute(
        "INSERT INTO delivery_queue (delivery_id, tenant_id, endpoint_id, event_type, origin, "
        "state, attempts, created_at, updated_at, version, position, created_position, doc) "
        "VALUES ('d', 't', 'e', 'job.queued', 'event', 'pending', 0, 'x', 'x', 1, 1, 1, '{}')"
    )
    mid_batch.__exit__(None, None, None)
    starting.join(timeout=15)
    store.close()

    assert finished_while_the_batch_was_open, "the set-up waited for the owner's batch"
    assert errors == []
