"""`AuditedAggregate`: an eventsourcing aggregate whose every event is hash-chained.

Subclasses raise events only through `_start` (the first event) and `_record` (every later one);
the created event subclasses both the subclass's `Event` and `Aggregate.Created`, and is also
bound to the name `Created` on the subclass (the library defines one for every name it inherits);
both stamp the event with a stable `event_id`, the `actor`, `prev_hash` and `hash` (see
`ledger.audit`). Event times come from the caller (who got them from a `Clock`), never from here.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Self
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from ledger.audit import GENESIS, hash_event


def event_id_for(aggregate_id: UUID, version: int) -> UUID:
    """Events have no id of their own in the store; this one is stable and derivable."""
    return uuid5(aggregate_id, f"v{version}")


class AuditedAggregate(Aggregate):
    class Event(Aggregate.Event):
        event_id: UUID
        actor: str
        prev_hash: str
        hash: str

        @property
        def occurred_at(self) -> datetime:
            return self.timestamp

        @property
        def version(self) -> int:
            return self.originator_version

        def apply(self, aggregate: Any) -> None:
            aggregate.last_hash = self.hash

    if TYPE_CHECKING:
        last_hash: str

    @classmethod
    def _start(
        cls,
        event_class: type[Aggregate.Created],
        *,
        id: UUID,
        when: datetime,
        actor: str,
        **fields: Any,
    ) -> Self:
        version = cls.INITIAL_VERSION
        stamped = _stamp(
            event_class,
            {
                "originator_id": id,
                "originator_version": version,
                "timestamp": when,
                "originator_topic": _aggregate_topic(cls),
                "event_id": event_id_for(id, version),
                "actor": actor,
                "prev_hash": GENESIS,
                **fields,
            },
        )
        stamped.pop("originator_topic")
        stamped.pop("originator_version")
        stamped.pop("originator_id")
        return cls._create(event_class, id=id, **stamped)

    def _record(
        self,
        event_class: type[AuditedAggregate.Event],
        *,
        when: datetime,
        actor: str,
        **fields: Any,
    ) -> None:
        version = self.version + 1
        stamped = _stamp(
            event_class,
            {
                "originator_id": self.id,
                "originator_version": version,
                "timestamp": when,
                "event_id": event_id_for(self.id, version),
                "actor": actor,
                "prev_hash": self.last_hash,
                **fields,
            },
        )
        stamped.pop("originator_version")
        stamped.pop("originator_id")
        self.trigger_event(event_class, **stamped)


def _aggregate_topic(cls: type) -> str:
    topic = getattr(cls, "TOPIC", None)
    if not topic:
        raise TypeError(f"{cls.__name__} needs an explicit TOPIC")
    return str(topic)


def _stamp(event_class: type, fields: dict[str, Any]) -> dict[str, Any]:
    fields = dict(fields)
    fields["hash"] = hash_event(event_class.TOPIC, fields)  # type: ignore[attr-defined]
    return fields
