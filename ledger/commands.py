"""`AggregateCommands`: load-decide-save with optimistic concurrency, shared by the ledger's
command mixins (tenancy, webhooks).

A command loads the aggregate, decides (which may refuse with a `LedgerError` and write
nothing, or find nothing to do), and saves. When another writer saved the same aggregate
first, it is decided again on the fresh state, up to `COMMAND_RETRIES` times.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from ledger.errors import ConcurrentUpdate, store_errors
from ledger.group_commit import GroupCommit

COMMAND_RETRIES = 8

A = TypeVar("A", bound=Aggregate)


@dataclass(frozen=True)
class Changed:
    """An aggregate after a command, and the log positions it wrote (none: nothing changed)."""

    aggregate: Any
    positions: tuple[int, ...]

    @property
    def position(self) -> int:
        return max(self.positions, default=0)


def positions_by_aggregate(recordings: Any) -> dict[UUID, tuple[int, ...]]:
    """The log positions one save wrote, by the aggregate whose events they hold."""
    positions: dict[UUID, list[int]] = {}
    for recording in recordings:
        positions.setdefault(recording.domain_event.originator_id, []).append(
            recording.notification.id
        )
    return {aggregate_id: tuple(found) for aggregate_id, found in positions.items()}


class AggregateCommands(Application[UUID]):
    group_commit: GroupCommit  # set by the application's constructor

    def _commit(self, *aggregates: Any) -> list[Any]:
        """Save through group commit: concurrent commands share one store transaction."""
        return self.group_commit.save(*aggregates)

    def _load(self, aggregate_id: UUID, kind: type[A]) -> A | None:
        try:
            with store_errors():
                aggregate: Any = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
        return aggregate if isinstance(aggregate, kind) else None

    def _load_many(self, aggregate_ids: Sequence[UUID], kind: type[A]) -> dict[UUID, A]:
        """The aggregates of this kind among the ids (absent: not found, or another kind)."""
        found = self.aggregates_at(dict.fromkeys(aggregate_ids))
        return {i: a for i, a in found.items() if isinstance(a, kind)}

    def aggregates_at(self, versions: Mapping[UUID, int | None]) -> dict[UUID, Any]:
        """Each aggregate as it was at the version given (None: now), of any kind, in one read
        of the store when its recorder can (`select_events_of`), else one read each. An id
        with no event up to there is left out."""
        select_many = getattr(self.recorder, "select_events_of", None)
        found: dict[UUID, Any] = {}
        if select_many is None:
            for aggregate_id, version in versions.items():
                with contextlib.suppress(AggregateNotFoundError), store_errors():
                    found[aggregate_id] = self.repository.get(aggregate_id, version=version)
            return found
        with store_errors():
            stored = select_many(list(versions))
        for record in stored:
            limit = versions[record.originator_id]
            if limit is not None and record.originator_version > limit:
                continue
            event: Any = self.mapper.to_domain_event(record)
            found[event.originator_id] = event.mutate(found.get(event.originator_id))
        return found

    def _update_aggregate(
        self,
        aggregate_id: UUID,
        kind: type[A],
        not_found: Callable[[UUID], Exception],
        tenant_id: str | None,
        decide: Callable[[A], bool],
        loaded: A | None = None,
    ) -> Changed:
        """Load (404 unless it is the tenant's; None: any tenant), decide, save.

        `loaded`: the aggregate as the caller already read it, decided on first instead of
        reading it again (it is changed in place). If it is stale, the save is refused like
        any concurrent write and the command is decided again on a fresh load."""
        for _ in range(COMMAND_RETRIES):
            aggregate = loaded if loaded is not None else self._load(aggregate_id, kind)
            loaded = None
            if aggregate is None or (
                tenant_id is not None and getattr(aggregate, "tenant_id", None) != tenant_id
            ):
                raise not_found(aggregate_id)
            if not decide(aggregate):
                return Changed(aggregate, ())
            try:
                with store_errors():
                    recordings = self._commit(aggregate)
            except IntegrityError:
                continue  # someone else wrote it first: decide again on fresh state
            return Changed(aggregate, tuple(r.notification.id for r in recordings))
        raise ConcurrentUpdate(
            f"{kind.__name__} {aggregate_id} kept changing while this command was applied "
            f"({COMMAND_RETRIES} tries); nothing was written. Try again.",
            id=str(aggregate_id),
        )
