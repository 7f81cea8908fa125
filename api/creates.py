"""Job creation from many concurrent requests, one store transaction per round.

The ledger is synchronous, so each API call runs in a worker thread (`ApiState.call`). For the
busiest write, `POST /v1/jobs`, one thread per request meant 32 concurrent creates kept 32
threads handing Python's lock back and forth (most of that process's CPU went to the kernel)
while the ledger's group commit merged their saves. Here each request builds its job on the
event loop (`JobLedger.new_job`: no I/O) and submits it to `ledger.rounds.Rounds`: everything
queued is saved in one call to `JobLedger.create_jobs` in one worker thread, and each request
gets its own result (a replay or a conflicting reuse of a key is told to that request alone,
exactly as `create_job` would tell it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ledger.application import Created, JobLedger
from ledger.errors import LedgerError
from ledger.job import Job
from ledger.request import NewJob
from ledger.rounds import Rounds

Call = Callable[..., Awaitable[Any]]


class JobCreates:
    def __init__(self, ledger: JobLedger, call: Call) -> None:
        """`call(fn, *args)` runs a blocking ledger call off the loop (`ApiState.call`)."""
        self.ledger = ledger
        self._call = call
        self._rounds: Rounds[Job, Created] = Rounds(self._save)

    @property
    def rounds(self) -> int:
        return self._rounds.rounds

    async def create(
        self, new: NewJob, *, tenant_id: str, idempotency_key: str, actor: str
    ) -> Created:
        """What `JobLedger.create_job` returns (or raises) for this request."""
        job = self.ledger.new_job(
            new, tenant_id=tenant_id, idempotency_key=idempotency_key, actor=actor
        )
        return await self._rounds.submit(job)

    async def _save(self, jobs: list[Job]) -> Sequence[Created | LedgerError]:
        results: Sequence[Created | LedgerError] = await self._call(self.ledger.create_jobs, jobs)
        return results
