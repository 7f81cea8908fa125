"""Group commit: concurrent saves share one store transaction.

The event store serialises writers (on PostgreSQL every insert locks the events table), so one
transaction per command caps throughput at what one connection commits per second. Here each
thread that saves queues its events; the first to find no save under way becomes the leader
and writes everything queued, in one transaction, while newcomers queue up for the next round.
Nobody waits on a timer: a lone save is written at once, and a batch forms only from the saves
that arrived while the previous one was being written.

When the batch is refused because one of its aggregates was written by someone else first
(`IntegrityError`: optimistic concurrency, or a duplicate creation), each entry is saved on its
own, so only the conflicting command sees the conflict (and re-decides, as it would have).
An unreachable store fails the whole batch: every caller gets that error, no one retries here.

This module imports only the standard library and eventsourcing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.persistence import IntegrityError

MAX_BATCH = 200


@dataclass
class _Entry:
    events: list[Any]
    done: threading.Event = field(default_factory=threading.Event)
    recordings: list[Any] = field(default_factory=list)
    error: BaseException | None = None


class GroupCommit:
    def __init__(
        self, save_events: Callable[..., list[Any]], *, max_batch: int = MAX_BATCH
    ) -> None:
        """`save_events(*events)` writes events in one transaction and returns recordings."""
        self._save = save_events
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Entry] = []
        self._leading = False
        self.batches = 0  # rounds written (for tests and metrics)

    def save(self, *aggregates: Any) -> list[Any]:
        """Save the aggregates' pending events (atomically together); returns their
        recordings. Raises what the store raised for them (IntegrityError on a conflict)."""
        events = [e for aggregate in aggregates for e in aggregate.collect_events()]
        if not events:
            return []
        entry = _Entry(events)
        with self._lock:
            self._queue.append(entry)
            lead = not self._leading
            if lead:
                self._leading = True
        if lead:
            self._lead()
        entry.done.wait()
        if entry.error is not None:
            raise entry.error
        return entry.recordings

    def _lead(self) -> None:
        while True:
            with self._lock:
                batch = self._queue[: self._max_batch]
                del self._queue[: len(batch)]
                if not batch:
                    self._leading = False
                    return
            self._write(batch)

    def _write(self, batch: Sequence[_Entry]) -> None:
        self.batches += 1
        try:
            if len(batch) == 1:
                self._write_alone(batch[0])
                return
            try:
                recordings = self._save(*(e for entry in batch for e in entry.events))
            except IntegrityError:
                for entry in batch:  # find who conflicted: each on its own
                    self._write_alone(entry)
                return
            except BaseException as error:
                for entry in batch:
                    entry.error = error
                return
            by_event = {id(r.domain_event): r for r in recordings}
            for entry in batch:
                entry.recordings = [by_event[id(e)] for e in entry.events if id(e) in by_event]
        finally:
            for entry in batch:
                entry.done.set()

    def _write_alone(self, entry: _Entry) -> None:
        try:
            entry.recordings = self._save(*entry.events)
        except BaseException as error:
            entry.error = error
