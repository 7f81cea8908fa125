"""A job's story in plain sentences, for support staff (`ledger jobs explain ID`, the console).

"Attempt 2 failed at 10:03:12 after Pinterest answered 429 (rate limited); retried in 41 s."

`explain(events, deliveries=...)` is a pure function of the job's events (and, optionally, the
events of the webhook deliveries it caused): one sentence per event, in order, each with its
time. Times are UTC; the first sentence carries the date, later ones only when the day changes.
This module must never read a clock, a store or the network.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# error codes recorded by the publishers, in words
ERROR_WORDS = {
    "rate_limited": "rate limited",
    "spam_rejected": "rejected as spam",
    "invalid_url": "the link was refused",
    "invalid_request": "the request was refused as invalid",
    "unauthorized": "the account's token was refused or is missing",
    "forbidden": "not permitted",
    "invalid_media": "the image was refused",
    "board_not_found": "the board does not exist",
    "section_not_found": "the board section does not exist",
    "not_found": "not found",
    "timeout": "timed out",
    "network_error": "a network error",
    "server_error": "a server error at Pinterest",
    "client_error": "the request was refused",
    "unexpected_response": "an unexpected answer",
    "worker_lost": "the worker stopped answering (its lease expired)",
    "reconcile_failed": "the earlier attempt could not be checked",
}

STATE_WORDS = {
    "queued": "queued",
    "scheduled": "scheduled",
    "running": "running",
    "published": "published",
    "failed_retrying": "failed, will retry",
    "failed_terminal": "failed for good",
    "canceled": "canceled",
}


@dataclass(frozen=True)
class Sentence:
    at: datetime
    kind: str
    text: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "type": self.kind,
            "text": self.text,
        }


def explain(events: Sequence[Any], deliveries: Iterable[Sequence[Any]] = ()) -> list[Sentence]:
    """The job's events (oldest first), then each delivery's, merged in time order."""
    sentences = [Sentence(e.timestamp, type(e).__name__, _job_sentence(e)) for e in events]
    for delivery_events in deliveries:
        sentences += _delivery_sentences(delivery_events)
    sentences.sort(key=lambda s: s.at)
    return sentences


def render(sentences: Sequence[Sentence]) -> str:
    """One line per sentence; the date is written when it changes."""
    lines = []
    day = None
    for sentence in sentences:
        at = sentence.at.astimezone(UTC)
        if at.date() != day:
            day = at.date()
            lines.append(f"{day.isoformat()} (UTC)")
        lines.append(f"  {sentence.text}")
    return "\n".join(lines)


def _job_sentence(event: Any) -> str:
    kind = type(event).__name__
    at = _clock(event.timestamp)
    by = _actor(event.actor)
    if kind == "JobCreated":
        when = (
            f", to publish at {_clock(event.publish_at)} on {event.publish_at.date()}"
            if event.publish_at
            else ""
        )
        sandbox = " in the sandbox" if event.mode == "sandbox" else ""
        return (
            f"Created at {at} by {by} for account {event.account_id}, board {event.board_id}"
            f"{sandbox}{when} (idempotency key {event.idempotency_key})."
        )
    if kind == "JobScheduled":
        return f"Scheduled at {at} to run at {_clock(event.run_at)}."
    if kind == "JobPaced":
        return (
            f"Held back at {at} to keep within Pinterest's rate limits ({event.reason}); "
            f"now due at {_clock(event.run_at)}."
        )
    if kind == "AttemptStarted":
        return f"Attempt {event.attempt} started at {at} on {event.worker_id}."
    if kind == "JobPublished":
        return (
            f"Attempt {event.attempt} published the pin at {at}: Pinterest id {event.external_ref}."
        )
    if kind == "AttemptFailed":
        return (
            f"Attempt {event.attempt} failed at {at} {_cause(event)}; "
            f"retried in {_duration(event.delay_seconds)}."
        )
    if kind == "JobFailedTerminally":
        why = (
            "no attempts are left"
            if event.reason == "attempts_exhausted"
            else "retrying would not help"
        )
        return f"Attempt {event.attempt} failed at {at} {_cause(event)}; {why}, so the job failed."
    if kind == "JobCanceled":
        reason = f" ({event.reason})" if event.reason else ""
        return f"Canceled at {at} by {by}{reason}."
    if kind == "JobRequeued":
        reason = f" ({event.reason})" if event.reason else ""
        return f"Requeued at {at} by {by} for another try{reason}."
    return f"{kind} at {at}."


def _cause(event: Any) -> str:
    words = ERROR_WORDS.get(event.error_code, event.error_code.replace("_", " "))
    status = (event.receipt or {}).get("status")
    if isinstance(status, int):
        cause = f"after Pinterest answered {status} ({words})"
    elif event.error_code == "worker_lost":
        cause = f"because {words}"
    else:
        cause = f"with {words}"
    if event.ambiguous:
        cause += "; the pin may have been made, so the next attempt checks first"
    return cause


def _delivery_sentences(events: Sequence[Any]) -> list[Sentence]:
    if not events:
        return []
    created = events[0]
    kind = created.event_type
    sentences = []
    for event in events:
        name = type(event).__name__
        at = _clock(event.timestamp)
        if name == "DeliveryCreated":
            if created.hold_reason:
                text = f"The {kind} webhook was held at {at}: the endpoint is disabled."
            else:
                text = f"The {kind} webhook was queued at {at} for endpoint {created.endpoint_id}."
        elif name == "DeliveryAttempted":
            receipt = event.receipt or {}
            status = receipt.get("status_code")
            answer = (
                f"the endpoint answered {status}"
                if status is not None
                else (receipt.get("error") or receipt.get("error_class") or "no answer")
            )
            latency = receipt.get("latency_ms")
            took = f" in {latency:.0f} ms" if isinstance(latency, int | float) else ""
            if event.succeeded:
                text = f"The {kind} webhook was delivered at {at} ({answer}{took})."
            elif event.result_state == "pending" and event.next_attempt_at is not None:
                wait = (event.next_attempt_at - event.timestamp).total_seconds()
                text = (
                    f"Webhook attempt {event.attempt} for {kind} failed at {at} ({answer}); "
                    f"retried in {_duration(wait)}."
                )
            elif event.result_state == "dead_lettered":
                text = (
                    f"Webhook attempt {event.attempt} for {kind} failed at {at} ({answer}); "
                    "no retries left, so it was dead-lettered."
                )
            else:
                text = f"Webhook attempt {event.attempt} for {kind} failed at {at} ({answer})."
        elif name == "DeliveryHeld":
            text = f"The {kind} webhook was held at {at} ({event.reason.replace('_', ' ')})."
        elif name == "DeliveryRetryRequested":
            text = f"The {kind} webhook was sent again at {at} on request ({event.reason})."
        else:
            text = f"{name} at {at}."
        sentences.append(Sentence(event.timestamp, name, text))
    return sentences


def _actor(actor: str) -> str:
    if actor.startswith("key:"):
        return f"API key {actor[4:]}"
    if actor.startswith("worker:"):
        return actor
    return actor or "the system"


def _clock(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%H:%M:%S")


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
