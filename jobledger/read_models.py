"""`ReadModels`: every registered projection's runner, followed in background threads, plus
the read-your-writes waiter. One per serving process; the API reads and the worker's due scans
use the same rows. On PostgreSQL several processes may run it: one runner per projection owns
it (advisory lock), the others stand by.
"""

from __future__ import annotations

import threading

from jobledger.bootstrap import Service
from projections.delivery_fanout import DeliveryFanout
from projections.doc_cache import DocCache, DocFollower
from projections.job_status import JOB_TOPICS, JobStatusProjection
from projections.registry import PROJECTIONS, live
from projections.runner import PositionWaiter, ProjectionRunner, RunnerGroup
from storage.config import migration_lock
from storage.recorder import TopicNotifyingRecorder
from storage.sql import SqlStore


class ReadModels:
    def __init__(
        self,
        service: Service,
        *,
        max_connections: int | None = None,
        keep_status_docs: bool = False,
    ) -> None:
        self.ledger = service.ledger
        self.store = SqlStore(
            service.database,
            max_connections=max_connections or service.settings.db_pool_size,
        )
        # Status documents in memory for the API's status reads (`keep_status_docs`: a process
        # that serves them), kept true to the log by a follower of its own. PostgreSQL only
        # (the follower reads the log with the recorder's `select_changed_after`).
        recorder = self.ledger.recorder
        self.status_docs: DocCache | None = None
        self._doc_follower: DocFollower | None = None
        if keep_status_docs and isinstance(recorder, TopicNotifyingRecorder):
            self.status_docs = DocCache()
            self._doc_follower = DocFollower(recorder, self.status_docs, JOB_TOPICS)
        self.runners = {
            name: ProjectionRunner(
                self.ledger,
                self.store,
                JobStatusProjection(self.ledger, docs=self.status_docs)
                if name == "job_status"
                else live(self.ledger, name),
            )
            for name in sorted(PROJECTIONS)
        }
        # Not a view but a follower of the log that makes deliveries (never rebuilt).
        self.runners["delivery_fanout"] = ProjectionRunner(
            self.ledger, self.store, DeliveryFanout(self.ledger)
        )
        self.waiter = PositionWaiter(self.store, "job_status")
        if self.status_docs is not None:  # kept before the waiter lets a read through
            self.job_status.position_changed.append(self.status_docs.commit)
        self.job_status.position_changed.append(self.waiter.advanced)
        with migration_lock(service.database):
            for runner in self.runners.values():
                runner.setup()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # One thread follows the log for all of them: the fan-out first, then the delivery
        # queue (the path to a webhook), then the views.
        order = ["delivery_fanout", "delivery_queue"]
        self._group = RunnerGroup(
            [self.runners[n] for n in order]
            + [r for n, r in self.runners.items() if n not in order]
        )

    @property
    def job_status(self) -> ProjectionRunner:
        return self.runners["job_status"]

    def start(self) -> None:
        """Follow the log in one thread for all the projections (`RunnerGroup`)."""
        self.ledger.saved_listeners.append(self._group.notify)
        thread = threading.Thread(
            target=self._group.run, args=(self._stop,), name="projections", daemon=True
        )
        thread.start()
        self._threads.append(thread)
        if self._doc_follower is not None:
            self._group.also_notify.append(self._doc_follower.wake)
            thread = threading.Thread(
                target=self._doc_follower.run, args=(self._stop,), name="status-docs", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def catch_up(self) -> None:
        for runner in self.runners.values():
            runner.catch_up()

    def close(self) -> None:
        self._stop.set()
        self._group.notify()  # (wakes the follower too)
        if self._group.notify in self.ledger.saved_listeners:
            self.ledger.saved_listeners.remove(self._group.notify)
        for thread in self._threads:
            thread.join(timeout=10)
        self.store.close()
