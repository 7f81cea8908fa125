"""Status documents in memory (`projections.doc_cache`) across processes' read models on one
PostgreSQL database: a process that does not apply the view keeps documents it read, and drops
one as soon as another process writes a change to its job (through the log and LISTEN, not
this process's saves); the process that applies the view keeps what its batches wrote."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import orjson
import pytest

from jobledger.bootstrap import Service, build
from jobledger.read_models import ReadModels
from jobledger.settings import Settings
from ledger.job import Job
from projections.doc_cache import DocCache
from projections.job_status import doc_query
from projections.runner import RunnerGroup
from tests.conftest import make_new_job

pytestmark = pytest.mark.postgres


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


@pytest.fixture
def other_process(postgres_url: str) -> Iterator[Service]:
    """A second service on the same database: its saves reach the read models under test
    only as another process's would (the log and NOTIFY)."""
    built = build(Settings(database_url=postgres_url))
    yield built
    built.close()


def docs_of(models: ReadModels) -> DocCache:
    assert models.status_docs is not None  # PostgreSQL
    return models.status_docs


def read_as_the_api_does(models: ReadModels, job: Job) -> None:
    """What `StatusDocs.get` does on a miss: the row and the view's position in one
    statement, then `fill`."""
    with models.store.transaction() as tx:
        row = tx.execute(*doc_query(None, job.id)).fetchone()
    assert row is not None
    docs_of(models).fill(job.id, str(row[1]), str(row[0]), int(row[2]))


def status(job: Job) -> dict[str, object]:
    return dict(orjson.loads(orjson.dumps(job.status())))


def kept(models: ReadModels, job: Job) -> dict[str, object] | None:
    doc = docs_of(models).get(job.id, job.tenant_id)
    return None if doc is None else dict(orjson.loads(doc))


def test_each_process_keeps_documents_true_to_every_processs_writes(
    postgres_service: Service, other_process: Service
) -> None:
    owner = ReadModels(postgres_service, keep_status_docs=True)
    owner.start()
    try:
        wait_for(lambda: docs_of(owner).following, "the owner's follower did not start")
        standby = ReadModels(postgres_service, keep_status_docs=True)
        standby.start()
        try:
            wait_for(lambda: docs_of(standby).following, "the follower did not start")
            time.sleep(RunnerGroup.OWNERSHIP_CHECK_SECONDS + 0.5)  # it tried to take the views
            elsewhere = other_process.ledger
            made = elsewhere.create_job(
                make_new_job(), tenant_id="t", idempotency_key="1", actor="a"
            )
            wait_for(lambda: kept(owner, made.job) is not None, "the owner did not keep it")
            assert kept(owner, made.job) == status(made.job)  # written through, never read
            assert kept(standby, made.job) is None  # it does not apply the view: no batches
            wait_for(lambda: owner.waiter.reached(made.position), "not applied")
            read_as_the_api_does(standby, made.job)
            assert kept(standby, made.job) == status(made.job)

            canceled = elsewhere.cancel(made.job.id, actor="a")
            wait_for(lambda: kept(standby, made.job) is None, "the change went unseen", 5)
            wait_for(lambda: kept(owner, made.job) == status(canceled.job), "not kept", 5)
            read_as_the_api_does(standby, made.job)  # the view has it now (the owner kept it)
            assert kept(standby, made.job) == status(canceled.job)
            assert docs_of(standby).get(made.job.id, "t", canceled.position) is not None
        finally:
            standby.close()
    finally:
        owner.close()
    assert not docs_of(owner).following  # closing stops the follower, and keeps nothing
    assert len(docs_of(owner)) == 0
