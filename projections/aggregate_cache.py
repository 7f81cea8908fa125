"""`AggregateCache`: the aggregate as it was just before an event, for projections that keep
one row per aggregate by applying each event to its predecessor.

A bounded in-memory LRU of the latest version seen; on a miss (or a version gap) the aggregate
is rebuilt from the log up to the version before the event. So a row is, by construction, what
the aggregate itself would say after that event.

Only aggregates that are still moving are kept: one that `settled` says is at rest (a published
job, a delivered webhook) is dropped once its batch is done, because it gets no further events
unless a person acts, and then one read of its log rebuilds it. Without that, the cache filled
with finished jobs and deliveries up to its bound (~1.7 KB a job, ~1.3 KB a delivery, ~30 MB
for the two default caches) and the projecting process's memory grew with the ledger until it
got there. The bound now only matters when that many aggregates are in flight at once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any
from uuid import UUID

from eventsourcing.utils import resolve_topic

from ledger.application import JobLedger


class AggregateCache:
    def __init__(
        self, ledger: JobLedger, *, settled: Callable[[Any], bool], size: int = 10_000
    ) -> None:
        self.ledger = ledger
        self.size = size
        self.settled = settled
        self._items: OrderedDict[UUID, Any] = OrderedDict()
        self._settling: set[UUID] = set()

    def __len__(self) -> int:
        return len(self._items)

    def apply(self, event: Any, seen: Callable[[Any], None] | None = None) -> Any:
        """The aggregate after `event` (remembered for the next one). `seen`: called with the
        aggregate just before the event (None before a created event), which the event then
        changes in place."""
        before = self._before(event)
        if seen is not None:
            seen(before)
        aggregate = event.mutate(before) if before is not None else _created(event)
        self._items[aggregate.id] = aggregate
        self._items.move_to_end(aggregate.id)
        if self.settled(aggregate):
            # Not dropped yet: a later event of the same batch may still need it, and a miss
            # then would read the ledger inside the view's transaction (see `preload`).
            self._settling.add(aggregate.id)
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return aggregate

    def clear(self) -> None:
        self._items.clear()
        self._settling.clear()

    def drop_settled(self) -> None:
        """Forget the aggregates the last batch left at rest."""
        for aggregate_id in self._settling:
            aggregate = self._items.get(aggregate_id)
            if aggregate is not None and self.settled(aggregate):
                del self._items[aggregate_id]
        self._settling.clear()

    def preload(self, events: Iterable[Any]) -> None:
        """Load every aggregate a batch will need, as it was just before its first event in
        the batch, so that `apply` finds them here. Call it before the view's transaction
        opens: on SQLite that transaction holds the database's write lock, and reading the
        ledger inside it can deadlock with ledger writers queued in the event store's
        connection pool (each waits for the other until the pool times out)."""
        self.drop_settled()
        firsts: dict[UUID, Any] = {}
        for event in events:
            firsts.setdefault(event.originator_id, event)
        missing: dict[UUID, int] = {}
        for event in firsts.values():
            if event.originator_version == 1:
                continue
            cached = self._items.get(event.originator_id)
            if cached is not None and cached.version == event.originator_version - 1:
                continue
            missing[event.originator_id] = event.originator_version - 1
        if not missing:
            return
        # one read of the ledger for all of them (left out: not found; `apply` then raises)
        for aggregate_id, aggregate in self.ledger.aggregates_at(missing).items():
            if aggregate.version != missing[aggregate_id]:
                continue
            self._items[aggregate_id] = aggregate
            self._items.move_to_end(aggregate_id)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def _before(self, event: Any) -> Any:
        if event.originator_version == 1:
            return None
        cached = self._items.get(event.originator_id)
        if cached is not None and cached.version == event.originator_version - 1:
            return cached
        return self.ledger.repository.get(event.originator_id, version=event.originator_version - 1)


def _created(event: Any) -> Any:
    """`event.mutate(None)` for a created event, without the library's generic keyword
    matching when the aggregate class has no `__init__` of its own (ours set their state in
    the created event's `apply`): the same base attributes, then the same `apply`."""
    cls = resolve_topic(event.originator_topic)
    if cls.__init__ is not object.__init__:
        return event.mutate(None)
    aggregate = object.__new__(cls)
    aggregate.__base_init__(event.originator_id, event.originator_version, event.timestamp)
    event.apply(aggregate)
    return aggregate
