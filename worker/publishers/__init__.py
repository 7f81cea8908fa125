"""The publisher interface: how one attempt of a job reaches the outside world.

A publisher is synchronous and is called from the attempt's own worker thread:
- `publish(job, attempt) -> Outcome`: try once. `Published` on success, else an
  `ledger.job.AttemptFailure` that says whether the failure is retryable and whether it is
  ambiguous (the upstream may have applied it).
- `reconcile(job, since) -> Outcome | None`: before an ambiguous attempt is retried, look
  upstream for a result created since `since`. `Published` when found (the worker records it
  instead of publishing again), None when nothing was applied, an `AttemptFailure` when the
  check itself failed (the worker then records that and does NOT publish blind).

Publishers never raise for upstream trouble; an exception escaping one is a bug, which the
worker records as an ambiguous retryable `worker_error`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from ledger.job import AttemptFailure, Job


@dataclass(frozen=True)
class Published:
    external_ref: str
    receipt: dict[str, Any] = field(default_factory=dict)


Outcome = Published | AttemptFailure


class Publisher(Protocol):
    def publish(self, job: Job, attempt: int) -> Outcome: ...

    def reconcile(self, job: Job, since: datetime) -> Outcome | None: ...

    def close(self) -> None: ...


Publishers = Mapping[str, Publisher]  # job mode ("sandbox", "pinterest") -> its publisher
