"""The status documents in memory (`projections.doc_cache.DocCache`) across processes' read
models on one PostgreSQL database: only the `job_status` view's owner keeps them, it keeps
each change its view writes, and a lost lock empties them at once (real advisory locks, the
lock's connection killed with `pg_terminate_backend`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from uuid import UUID

import orjson
import psycopg
import pytest

from jobledger.bootstrap import Service
from jobledger.read_models import ReadModels
from ledger.job import Job
from projections.doc_cache import DocCache
from projections.runner import RunnerGroup, advisory_key
from tests.conftest import make_new_job


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.fixture
def service(postgres_service: Service) -> Service:
    return postgres_service


def started(service: Service) -> ReadModels:
    models = ReadModels(service)
    models.start()
    return models


def docs_of(models: ReadModels) -> DocCache:
    assert models.status_docs is not None  # PostgreSQL
    return models.status_docs


def kept(models: ReadModels, job: Job) -> dict[str, object] | None:
    doc = docs_of(models).get(job.id, job.tenant_id)
    return None if doc is None else dict(orjson.loads(doc))


def terminate_lock_holder(postgres_url: str, service: Service, view: str) -> int:
    """Kill the backend holding `view`'s advisory lock (its owner's lock connection)."""
    key = advisory_key(service.database.schema, view) & 0xFFFF_FFFF_FFFF_FFFF
    with psycopg.connect(postgres_url.split("?")[0], autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' "
            "AND classid = %s AND objid = %s AND objsubid = 1 AND granted",
            (key >> 32, key & 0xFFFF_FFFF),
        ).fetchone()
    return int(row[0]) if row else 0


def test_only_the_owner_keeps_documents_and_it_keeps_every_change(
    service: Service, postgres_url: str
) -> None:
    owner = started(service)
    try:
        wait_for(lambda: docs_of(owner).owned, "the first read models did not take the view")
        standby = started(service)
        try:
            time.sleep(RunnerGroup.OWNERSHIP_CHECK_SECONDS + 0.5)  # it tried to take the lock
            assert not docs_of(standby).owned
            ledger = service.ledger
            made = ledger.create_job(make_new_job(), tenant_id="t", idempotency_key="1", actor="a")
            wait_for(lambda: owner.waiter.reached(made.position), "the owner did not apply it")
            status = orjson.loads(orjson.dumps(made.job.status()))
            assert kept(owner, made.job) == status  # written through by the view, no read
            canceled = ledger.cancel(made.job.id, actor="a")
            wait_for(lambda: owner.waiter.reached(canceled.position), "not applied")
            assert kept(owner, made.job) == orjson.loads(orjson.dumps(canceled.job.status()))
            assert kept(standby, made.job) is None
            assert len(docs_of(standby)) == 0
        finally:
            standby.close()
    finally:
        owner.close()


def test_a_lost_lock_empties_the_owners_documents_until_it_owns_the_view_again(
    service: Service, postgres_url: str
) -> None:
    models = ReadModels(service)
    seen: list[bool] = []
    models.job_status.ownership_changed.append(seen.append)
    models.start()
    try:
        docs = docs_of(models)
        wait_for(lambda: docs.owned, "the read models did not take the view")
        made = service.ledger.create_job(
            make_new_job(), tenant_id="t", idempotency_key="1", actor="a"
        )
        wait_for(lambda: models.waiter.reached(made.position), "not applied")
        assert kept(models, made.job) is not None
        assert terminate_lock_holder(postgres_url, service, "job_status") == 1
        wait_for(lambda: seen[:2] == [True, False], "the lost lock went unnoticed", seconds=10)
        # it stood by with nothing kept; the lock is free, so it takes the view again, empty
        wait_for(lambda: seen == [True, False, True], "it did not take it again", seconds=10)
        assert kept(models, made.job) is None
        docs.fill(UUID(str(made.job.id)), "t", "{}", docs.generation)  # (as a read would)
        assert docs.get(made.job.id, "t") == "{}"
    finally:
        models.close()
    assert seen[-1] is False  # closing gives the view up
    assert not docs.owned
