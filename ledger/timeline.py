"""A job's events as the outside world sees them: the timeline entries of
`GET /v1/jobs/{id}/events` and `ledger jobs timeline`. Pure functions over decoded events.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

# Fields every event has; the rest of an event's fields are its `data`.
ENVELOPE_FIELDS = frozenset(
    {
        "originator_id",
        "originator_version",
        "originator_topic",
        "timestamp",
        "event_id",
        "actor",
        "prev_hash",
        "hash",
    }
)


def event_type(event: Any) -> str:
    return type(event).__name__


def json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, dict):
        return {k: json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    return value


def timeline_entry(event: Any) -> dict[str, Any]:
    data = {
        f.name: json_value(getattr(event, f.name))
        for f in dataclasses.fields(event)
        if f.name not in ENVELOPE_FIELDS
    }
    return {
        "id": str(event.event_id),
        "job_id": str(event.originator_id),
        "type": event_type(event),
        "version": event.originator_version,
        "occurred_at": json_value(event.timestamp),
        "actor": event.actor,
        "data": data,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }
