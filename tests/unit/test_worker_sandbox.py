"""The sandbox publisher: scripted outcomes per attempt, deterministic references."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ledger.clock import ManualClock
from ledger.job import AttemptFailure, Job
from tests.conftest import make_new_job
from worker.publishers import Published
from worker.publishers.sandbox import SandboxPublisher, scripted_outcome


def job_with(simulate: list[str] | None) -> Job:
    new = make_new_job(simulate=simulate)
    return Job.create(
        tenant_id="t",
        idempotency_key="k",
        request_fingerprint=new.fingerprint(),
        account_id=new.account_id,
        board_id=new.board_id,
        pin=new.pin.as_dict(),
        publish_at=None,
        mode="sandbox",
        simulate=new.simulate,
        metadata={},
        actor="key:k",
        now=ManualClock().now(),
    )


def test_script_steps_and_last_entry_repeats() -> None:
    script = ["rate_limited", "timeout", "published"]
    assert [scripted_outcome(script, n) for n in (1, 2, 3, 4, 9)] == [
        "rate_limited",
        "timeout",
        "published",
        "published",
        "published",
    ]
    assert scripted_outcome(None, 1) == "published"
    assert scripted_outcome(["server_error"], 5) == "server_error"


@pytest.mark.parametrize(
    ("outcome", "code", "retryable", "ambiguous"),
    [
        ("rate_limited", "rate_limited", True, False),
        ("timeout", "timeout", True, True),
        ("server_error", "server_error", True, False),
        ("invalid_media", "invalid_media", False, False),
        ("board_not_found", "board_not_found", False, False),
        ("unauthorized", "unauthorized", False, False),
    ],
)
def test_failures_are_classified_like_the_live_publisher(
    outcome, code, retryable, ambiguous
) -> None:
    result = SandboxPublisher(retry_after_seconds=2.0).publish(job_with([outcome]), 1)
    assert isinstance(result, AttemptFailure)
    assert (result.code, result.retryable, result.ambiguous) == (code, retryable, ambiguous)
    assert result.receipt["sandbox"] is True
    assert result.retry_after == (2.0 if outcome == "rate_limited" else None)


def test_published_reference_is_deterministic_per_job_and_attempt() -> None:
    job = job_with(["server_error", "published"])
    sandbox = SandboxPublisher()
    first = sandbox.publish(job, 2)
    again = sandbox.publish(job, 2)
    assert isinstance(first, Published)
    assert first == again
    assert first.external_ref == f"sandbox-{str(job.id)[:8]}-2"


def test_sandbox_reconciliation_never_finds_anything() -> None:
    assert SandboxPublisher().reconcile(job_with(["timeout"]), datetime.now(UTC)) is None
