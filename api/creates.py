"""Job creation from many concurrent requests, one store transaction per round.

The ledger is synchronous, so each API call runs in a worker thread (`ApiState.call`). For the
busiest write, `POST /v1/jobs`, one thread per request meant 32 concurrent creates kept 32
threads handing Python's lock back and forth (most of that process's CPU went to the kernel)
while the ledger's group commit merged their saves. Here each request builds its job on the
event loop (`JobLedger.new_job`: no I/O) and queues it; one round at a time, everything queued
is saved in one call to `JobLedger.create_jobs` in one worker thread, and each request gets its
own result (a replay or a conflicting reuse of a key is told to that request alone, exactly as
`create_job` would tell it). Nobody waits on a timer: a lone request is saved at once, and a
round forms from the requests that arrived while the previous one was being saved.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ledger.application import Created, JobLedger
from ledger.errors import LedgerError
from ledger.job import Job
from ledger.request import NewJob

MAX_ROUND = 200  # jobs per transaction (as `ledger.group_commit.MAX_BATCH`)

Call = Callable[..., Awaitable[Any]]


class JobCreates:
    def __init__(self, ledger: JobLedger, call: Call) -> None:
        """`call(fn, *args)` runs a blocking ledger call off the loop (`ApiState.call`)."""
        self.ledger = ledger
        self._call = call
        self._queue: list[tuple[Job, asyncio.Future[Created]]] = []
        self._saving = False
        self.rounds = 0  # (for tests and metrics)

    async def create(
        self, new: NewJob, *, tenant_id: str, idempotency_key: str, actor: str
    ) -> Created:
        """What `JobLedger.create_job` returns (or raises) for this request."""
        job = self.ledger.new_job(
            new, tenant_id=tenant_id, idempotency_key=idempotency_key, actor=actor
        )
        done: asyncio.Future[Created] = asyncio.get_running_loop().create_future()
        self._queue.append((job, done))
        if not self._saving:
            self._saving = True
            asyncio.get_running_loop().create_task(self._save_rounds())
        # shielded: a client that goes away does not take the round's result from the others
        return await asyncio.shield(done)

    async def _save_rounds(self) -> None:
        try:
            while self._queue:
                batch = self._queue[:MAX_ROUND]
                del self._queue[: len(batch)]
                self.rounds += 1
                try:
                    results: Sequence[Created | LedgerError] = await self._call(
                        self.ledger.create_jobs, [job for job, _ in batch]
                    )
                except asyncio.CancelledError:  # the loop is closing
                    for _, done in batch:
                        done.cancel()
                    raise
                except Exception as error:  # the store failed the round: all of it
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(error)
                    continue
                for (_, done), result in zip(batch, results, strict=True):
                    if done.done():
                        continue
                    if isinstance(result, Created):
                        done.set_result(result)
                    else:
                        done.set_exception(result)
        finally:
            self._saving = False
