"""`Rounds`: concurrent asyncio callers share one save, one round at a time.

Each caller submits an item and awaits its own result; the first submission starts a round
with everything queued, and submissions that arrive while a round is being saved form the
next one. Nobody waits on a timer: a lone item is saved at once. `save(items)` returns one
result per item, in order: a value, or an exception that is raised to that item's caller
alone; an exception from `save` itself fails every caller of that round.

The asyncio twin of `ledger.group_commit` (which merges the saves of threads): the edges use
it so that many requests or webhook attempts in flight cost one worker-thread hop and one
store transaction per round instead of one each (`api.creates`, `delivery.sender`).
This module imports only the standard library.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

MAX_ROUND = 200  # items per round (as `ledger.group_commit.MAX_BATCH`)


class Rounds(Generic[T, R]):
    def __init__(
        self,
        save: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]],
        *,
        max_round: int = MAX_ROUND,
    ) -> None:
        self._save = save
        self._max_round = max_round
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._saving = False
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0  # (for tests and metrics)

    async def submit(self, item: T) -> R:
        """This item's result (or its exception), once its round is saved."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, done))
        if not self._saving:
            self._saving = True
            self._task = loop.create_task(self._save_rounds())  # (kept: tasks are weak)
        # shielded: a caller that goes away does not take the round's result from the others
        return await asyncio.shield(done)

    async def _save_rounds(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self._max_round]
                del self._queue[: len(batch)]
                self.rounds += 1
                try:
                    results = await self._save([item for item, _ in batch])
                except asyncio.CancelledError:  # the loop is closing
                    for _, done in batch:
                        done.cancel()
                    raise
                except Exception as error:  # the round failed: all of it
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(error)
                    continue
                for (_, done), result in zip(batch, results, strict=True):
                    if done.done():
                        continue
                    if isinstance(result, BaseException):
                        done.set_exception(result)
                    else:
                        done.set_result(result)
        finally:
            self._saving = False
