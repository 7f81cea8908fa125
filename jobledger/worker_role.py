"""The worker role, wired: settings -> publishers, pacing, the job-status projection and the
claim loop (`worker.runner.Worker`). Used by `ledger serve --role worker|all`.

The worker finds due work in the `job_status` projection, so a process running this role also
runs the read models (`jobledger.read_models`; on PostgreSQL one runner per projection is
elected with an advisory lock; the others stand by, and their workers wake by polling every
LEDGER_WORKER_POLL_SECONDS).
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from jobledger.bootstrap import Service
from jobledger.read_models import ReadModels
from jobledger.settings import Settings
from storage.sql import SqlStore
from worker.config import WorkerConfig
from worker.pacing import BucketSpec, Pacer
from worker.publishers import Publisher
from worker.publishers.pinterest import PinterestPublisher
from worker.publishers.sandbox import SandboxPublisher
from worker.runner import Worker, prepare_tables

log = logging.getLogger("jobledger")


def worker_config(settings: Settings) -> WorkerConfig:
    worker_id = settings.worker_id or f"{socket.gethostname()}:{os.getpid()}"
    if not worker_id.startswith("worker:"):
        worker_id = f"worker:{worker_id}"
    return WorkerConfig(
        worker_id=worker_id,
        concurrency=settings.worker_concurrency,
        lease_seconds=settings.worker_lease_seconds,
        poll_seconds=settings.worker_poll_seconds,
        shutdown_grace_seconds=settings.worker_shutdown_grace_seconds,
    )


def make_publishers(settings: Settings) -> dict[str, Publisher]:
    return {
        "sandbox": SandboxPublisher(latency_seconds=settings.sandbox_latency_seconds),
        "pinterest": PinterestPublisher(
            settings.pinterest_api_base,
            dict(settings.pinterest_tokens),
            timeout_seconds=settings.pinterest_timeout_seconds,
            max_connections=settings.worker_concurrency * 2,
        ),
    }


def make_pacer(settings: Settings, store: SqlStore) -> Pacer:
    return Pacer(
        store,
        account=BucketSpec(
            settings.pacing_account_capacity, settings.pacing_account_refill_per_second
        ),
        global_=BucketSpec(
            settings.pacing_global_capacity, settings.pacing_global_refill_per_second
        ),
    )


class WorkerRole:
    """The claim loop over the process's shared read models (`ReadModels`, started by the
    caller): their job-status runner wakes the worker as soon as the view moves."""

    def __init__(
        self,
        service: Service,
        read_models: ReadModels,
        publishers: dict[str, Publisher] | None = None,
    ) -> None:
        settings = service.settings
        logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per upstream request
        self.ledger = service.ledger
        self.store = SqlStore(service.database, max_connections=6)
        try:
            prepare_tables(self.store)
        except BaseException:
            self.store.close()
            raise
        self.publishers = publishers if publishers is not None else make_publishers(settings)
        self.worker = Worker(
            self.ledger,
            self.store,
            self.publishers,
            worker_config(settings),
            pacer=make_pacer(settings, self.store),
        )
        self.read_models = read_models
        read_models.job_status.position_changed.append(self.worker.wake)

    def run(self, stop: threading.Event) -> None:
        """Run until `stop` is set; then drain in-flight attempts and close what this opened."""
        try:
            self.worker.run(stop)  # returns after draining
        finally:
            self.close()

    def close(self) -> None:
        callbacks = self.read_models.job_status.position_changed
        if self.worker.wake in callbacks:
            callbacks.remove(self.worker.wake)
        for publisher in self.publishers.values():
            publisher.close()
        self.store.close()
