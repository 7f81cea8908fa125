"""The scheduler: moves `queued` jobs to `scheduled` (run_at = max(now, publish_at), decided by
`Job.schedule`). Several schedulers may run at once; the ledger refuses the second schedule of a
job (InvalidTransition), which is simply skipped."""

from __future__ import annotations

import logging

from ledger.application import JobLedger
from ledger.errors import ConcurrentUpdate, InvalidTransition, JobNotFound
from worker.queue import WorkQueue

log = logging.getLogger("jobledger.worker")


class Scheduler:
    def __init__(self, ledger: JobLedger, queue: WorkQueue, *, actor: str, batch_size: int = 100):
        self.ledger = ledger
        self.queue = queue
        self.actor = actor
        self.batch_size = batch_size

    def run_once(self) -> int:
        """Schedule up to one batch of queued jobs; returns how many this call scheduled."""
        done = 0
        with self.queue.claim("queued", self.ledger.clock.now(), self.batch_size) as queued:
            for candidate in queued:
                try:
                    self.ledger.schedule(candidate.job_id, actor=self.actor)
                except (InvalidTransition, JobNotFound, ConcurrentUpdate):
                    continue  # someone else moved it first (or the projection lags)
                done += 1
        return done
