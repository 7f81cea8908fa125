"""The scheduler: moves `queued` jobs to `scheduled` (run_at = max(now, publish_at), decided by
`Job.schedule`), a batch at a time in one store transaction. Several schedulers may run at once;
the ledger refuses the second schedule of a job (InvalidTransition), which is simply skipped."""

from __future__ import annotations

import logging

from ledger.application import JobLedger
from worker.queue import WorkQueue

log = logging.getLogger("jobledger.worker")


class Scheduler:
    def __init__(self, ledger: JobLedger, queue: WorkQueue, *, actor: str, batch_size: int = 100):
        self.ledger = ledger
        self.queue = queue
        self.actor = actor
        self.batch_size = batch_size

    def run_once(self) -> int:
        """Schedule up to one batch of queued jobs (one store transaction for the batch);
        returns how many this call scheduled."""
        with self.queue.claim("queued", self.ledger.clock.now(), self.batch_size) as queued:
            if not queued:
                return 0
            return len(self.ledger.schedule_many([c.job_id for c in queued], actor=self.actor))
