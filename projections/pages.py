"""A page of a view's list: its stored JSON documents in creation order, read one row past
the page (`LIMIT page + 1`) to know whether another follows. The job and delivery lists
page this way (`projections.job_status`, `projections.delivery_queue`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Page:
    docs: list[str]
    last_position: int | None  # the creation position of the last row, when more follow


def page_of(rows: Sequence[Sequence[Any]], limit: int) -> Page:
    """The page of (doc, created_position) `rows`, read with `LIMIT limit + 1`."""
    more = len(rows) > limit
    rows = rows[:limit]
    return Page([str(r[0]) for r in rows], int(rows[-1][1]) if more and rows else None)
