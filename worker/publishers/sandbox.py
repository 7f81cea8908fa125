"""The sandbox publisher: scripted outcomes, no network (SPEC section 4).

Attempt N of a job uses `simulate[N-1]` (attempt numbers are the job's absolute ones, so they
continue after a requeue); the last entry repeats when attempts outrun the script; the default
script is `["published"]`. External references are deterministic: `sandbox-<job id prefix>-<N>`.

Reconciliation: the sandbox keeps no upstream state, so a simulated `timeout` (or a lost worker)
is never found applied; `reconcile` returns None and the job is published again on the next
attempt. Each outcome's receipt says what a live attempt would have recorded (status, code).
"""

from __future__ import annotations

import random
import time
from datetime import datetime
from typing import Any

from ledger.job import AttemptFailure, Job
from worker.publishers import Outcome, Published

DEFAULT_SCRIPT = ("published",)

# outcome -> (error_code, message, HTTP status, Pinterest code, retryable, ambiguous)
FAILURES: dict[str, tuple[str, str, int | None, int | None, bool, bool]] = {
    "rate_limited": (
        "rate_limited",
        "sandbox: simulated HTTP 429 Too Many Requests",
        429,
        8,
        True,
        False,
    ),
    "timeout": (
        "timeout",
        "sandbox: simulated timeout after the request was sent; the outcome is unknown",
        None,
        None,
        True,
        True,
    ),
    "server_error": (
        "server_error",
        "sandbox: simulated HTTP 500 Internal Server Error",
        500,
        None,
        True,
        False,
    ),
    "invalid_media": (
        "invalid_media",
        "sandbox: simulated HTTP 403: image broken",
        403,
        235,
        False,
        False,
    ),
    "board_not_found": (
        "board_not_found",
        "sandbox: simulated HTTP 404: board not found",
        404,
        40,
        False,
        False,
    ),
    "unauthorized": (
        "unauthorized",
        "sandbox: simulated HTTP 401: authentication failed",
        401,
        2,
        False,
        False,
    ),
}


def scripted_outcome(script: list[str] | None, attempt: int) -> str:
    steps = script or list(DEFAULT_SCRIPT)
    return steps[min(attempt, len(steps)) - 1]


class SandboxPublisher:
    def __init__(
        self,
        *,
        latency_seconds: float = 0.0,
        retry_after_seconds: float | None = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        self.latency_seconds = latency_seconds
        self.retry_after_seconds = retry_after_seconds
        self.rng = rng or random.Random()  # noqa: S311 - latency jitter, not secrets

    def publish(self, job: Job, attempt: int) -> Outcome:
        if self.latency_seconds > 0:  # realistic latency: +-50% around the setting
            time.sleep(self.latency_seconds * self.rng.uniform(0.5, 1.5))
        outcome = scripted_outcome(job.simulate, attempt)
        receipt: dict[str, Any] = {"sandbox": True, "simulated": outcome, "attempt": attempt}
        if outcome == "published":
            ref = f"sandbox-{str(job.id)[:8]}-{attempt}"
            return Published(ref, {**receipt, "status": 201})
        code, message, status, pinterest_code, retryable, ambiguous = FAILURES[outcome]
        receipt.update(status=status, pinterest_code=pinterest_code)
        return AttemptFailure(
            code=code,
            message=message,
            retryable=retryable,
            ambiguous=ambiguous,
            retry_after=self.retry_after_seconds if outcome == "rate_limited" else None,
            receipt=receipt,
        )

    def reconcile(self, job: Job, since: datetime) -> Outcome | None:
        return None  # nothing upstream to find: see the module docstring

    def close(self) -> None:
        pass
