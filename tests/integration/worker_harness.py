"""`Harness`: a worker driven one pass at a time (attempts inline) over the real service, with
the job-status projection caught up around each pass."""

from __future__ import annotations

from typing import Any

import orjson

from ledger.job import Job
from projections.job_status import JobStatusProjection, get_doc
from projections.runner import ProjectionRunner
from storage.sql import SqlStore
from tests.conftest import make_new_job
from worker.config import WorkerConfig
from worker.pacing import BucketSpec, Pacer
from worker.publishers.sandbox import SandboxPublisher
from worker.runner import Worker, prepare_tables

LEASE = 60.0


class Harness:
    def __init__(self, ledger, store: SqlStore, clock, *, publishers=None, pacer=None, **cfg):
        self.ledger = ledger
        self.clock = clock
        self.store = store
        self.projection = ProjectionRunner(ledger, store, JobStatusProjection(ledger))
        prepare_tables(store, self.projection)
        self.pacer = pacer or Pacer(
            store, account=BucketSpec(50, 1.0), global_=BucketSpec(200, 3.0)
        )
        self.worker = Worker(
            ledger,
            store,
            publishers or {"sandbox": SandboxPublisher(retry_after_seconds=None)},
            WorkerConfig("worker:test", lease_seconds=LEASE, **cfg),
            pacer=self.pacer,
            threaded=cfg.pop("threaded", False) if "threaded" in cfg else False,
        )

    def step(self) -> int:
        self.projection.catch_up()
        done = self.worker.tick()
        self.projection.catch_up()
        return done

    def create(self, key: str, **overrides: Any):
        return self.ledger.create_job(
            make_new_job(**overrides), tenant_id="t1", idempotency_key=key, actor="key:k"
        ).job.id

    def until_final(self, job_id, *, seconds: float = 4000.0, steps: int = 20) -> Job:
        for _ in range(steps):
            self.step()
            job = self.ledger.get_job(job_id)
            if job.is_final:
                return job
            self.clock.advance(seconds)
        raise AssertionError(f"job {job_id} not final: {self.ledger.get_job(job_id).state}")

    def types(self, job_id) -> list[str]:
        return [type(e).__name__ for e in self.ledger.job_events(job_id)]

    def row(self, job_id) -> dict[str, Any]:
        with self.store.transaction() as tx:
            doc = get_doc(tx, None, job_id)
        assert doc is not None
        return orjson.loads(doc)
