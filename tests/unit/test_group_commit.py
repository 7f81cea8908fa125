"""Group commit: concurrent saves share one write; conflicts are isolated to their command."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest
from eventsourcing.persistence import IntegrityError, OperationalError

from ledger.group_commit import GroupCommit


@dataclass(frozen=True)
class Recording:
    domain_event: object


class Aggregate:
    def __init__(self, *names: str) -> None:
        self.pending = [object() for _ in names]
        self.names = names

    def collect_events(self) -> list[object]:
        events, self.pending = self.pending, []
        return events


class Store:
    """Records each write; the first write blocks until released, so others queue behind it."""

    def __init__(self, refuse: set[int] | None = None, down: bool = False) -> None:
        self.writes: list[list[object]] = []
        self.first_started = threading.Event()
        self.release = threading.Event()
        self.refuse = refuse or set()  # ids of events whose write conflicts
        self.down = down

    def save(self, *events: object) -> list[Recording]:
        self.writes.append(list(events))
        if len(self.writes) == 1:
            self.first_started.set()
            assert self.release.wait(10)
        if self.down:
            raise OperationalError("connection refused")
        if any(id(e) in self.refuse for e in events):
            raise IntegrityError("duplicate key")
        return [Recording(e) for e in events]


def run_concurrently(group: GroupCommit, store: Store, aggregates: list[Aggregate]) -> list:
    """The first aggregate's save is held in the store while the others queue up."""
    results: list = [None] * len(aggregates)

    def save(i: int) -> None:
        try:
            results[i] = group.save(aggregates[i])
        except Exception as error:
            results[i] = error

    first = threading.Thread(target=save, args=(0,))
    first.start()
    assert store.first_started.wait(10)
    others = [threading.Thread(target=save, args=(i,)) for i in range(1, len(aggregates))]
    for thread in others:
        thread.start()
    queued = threading.Event()

    def wait_queued() -> None:  # all others are in the queue (none can write: a save is held)
        while len(group._queue) < len(others):
            queued.wait(0.001)

    wait_queued()
    store.release.set()
    for thread in [first, *others]:
        thread.join(10)
    return results


def test_saves_that_arrive_during_a_write_share_the_next_write() -> None:
    store = Store()
    group = GroupCommit(store.save)
    aggregates = [Aggregate("a", "b")] + [Aggregate(f"e{i}") for i in range(5)]
    own_events = [list(a.pending) for a in aggregates]
    results = run_concurrently(group, store, aggregates)
    assert [len(w) for w in store.writes] == [2, 5]  # one held write, then one batch of five
    for events, recordings in zip(own_events, results, strict=True):
        assert [r.domain_event for r in recordings] == events  # each gets its own recordings
    assert group.batches == 2


def test_a_conflict_in_a_batch_fails_only_its_own_command() -> None:
    aggregates = [Aggregate("held")] + [Aggregate(f"e{i}") for i in range(4)]
    conflicting = aggregates[2].pending[0]
    store = Store(refuse={id(conflicting)})
    results = run_concurrently(GroupCommit(store.save), store, aggregates)
    assert isinstance(results[2], IntegrityError)
    assert [type(r) for i, r in enumerate(results) if i != 2] == [list] * 4
    # the batch of four was refused, then each was written on its own
    assert [len(w) for w in store.writes] == [1, 4, 1, 1, 1, 1]


def test_an_unreachable_store_fails_every_command_of_the_batch_once() -> None:
    store = Store(down=True)
    results = run_concurrently(GroupCommit(store.save), store, [Aggregate("x") for _ in range(4)])
    assert all(isinstance(r, OperationalError) for r in results)
    assert [len(w) for w in store.writes] == [1, 3]  # no retries one by one


def test_a_lone_save_is_written_at_once_and_nothing_pending_writes_nothing() -> None:
    store = Store()
    store.release.set()
    group = GroupCommit(store.save)
    aggregate = Aggregate("only")
    event = aggregate.pending[0]
    assert [r.domain_event for r in group.save(aggregate)] == [event]
    assert group.save(aggregate) == []  # no pending events left
    assert store.writes == [[event]]


@pytest.mark.parametrize("batch", [1, 3])
def test_batches_are_bounded(batch: int) -> None:
    store = Store()
    group = GroupCommit(store.save, max_batch=batch)
    results = run_concurrently(group, store, [Aggregate("x") for _ in range(7)])
    assert all(isinstance(r, list) for r in results)
    assert max(len(w) for w in store.writes[1:]) <= batch
