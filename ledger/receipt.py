"""A job's receipt: a self-contained record of what happened, to forward to a client as is.

`build_receipt(job, events)` is a pure function of the job and its events (no clock, no store):
the job summary, its outcome, every attempt with its outcome and receipts, the human actions
(cancel, requeue), and the hashes of the first and last events with a statement of how anyone
can verify them. `render_markdown(receipt)` renders the same dict as text. Both are reused by
`GET /v1/jobs/{id}/receipt` and the CLI. This module must never read a clock, a store or the
network.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ledger.audit import GENESIS
from ledger.job import Job
from ledger.timeline import timeline_entry

RECEIPT_VERSION = 1

VERIFY_STATEMENT = (
    "Every event carries `hash`, the SHA-256 of its canonical body (the event's topic and all "
    "its fields except `hash`, as JSON with sorted keys and no whitespace), and `prev_hash`, "
    "the hash of the job's previous event ({genesis} for the first). Fetch the full timeline "
    "(GET /v1/jobs/{job_id}/events, or `ledger jobs timeline {job_id} --json`), check that "
    "each event's prev_hash equals the previous event's hash, and that the last hash equals "
    "the one in this receipt; `ledger verify` also checks every hash and the log-wide digest."
)

_ATTEMPT_EVENTS = {"AttemptStarted", "JobPublished", "AttemptFailed", "JobFailedTerminally"}


def build_receipt(job: Job, events: Sequence[Any]) -> dict[str, Any]:
    entries = [timeline_entry(e) for e in events]
    status = job.status()
    attempts: list[dict[str, Any]] = []
    actions: list[dict[str, Any]] = []
    by_number: dict[int, dict[str, Any]] = {}
    for entry in entries:
        kind, data = entry["type"], entry["data"]
        if kind == "AttemptStarted":
            attempt = {
                "attempt": data["attempt"],
                "worker_id": data["worker_id"],
                "started_at": entry["occurred_at"],
                "ended_at": None,
                "outcome": "in_progress",
                "external_ref": None,
                "error": None,
                "retry": None,
                "receipt": {},
            }
            attempts.append(attempt)
            by_number[data["attempt"]] = attempt
        elif kind in _ATTEMPT_EVENTS:
            attempt = by_number.get(data["attempt"]) or _orphan(attempts, by_number, data)
            attempt["ended_at"] = entry["occurred_at"]
            attempt["receipt"] = data.get("receipt") or {}
            if kind == "JobPublished":
                attempt["outcome"] = "published"
                attempt["external_ref"] = data["external_ref"]
            else:
                attempt["outcome"] = (
                    "failed_retrying" if kind == "AttemptFailed" else "failed_terminal"
                )
                attempt["error"] = {
                    "code": data["error_code"],
                    "message": data["error_message"],
                    "retryable": data["retryable"],
                    "ambiguous": data["ambiguous"],
                }
                if kind == "AttemptFailed":
                    attempt["retry"] = {
                        "delay_seconds": data["delay_seconds"],
                        "next_run_at": data["next_run_at"],
                    }
                else:
                    attempt["error"]["reason"] = data["reason"]
        elif kind in ("JobCanceled", "JobRequeued"):
            actions.append(
                {
                    "type": kind,
                    "occurred_at": entry["occurred_at"],
                    "actor": entry["actor"],
                    "reason": data.get("reason"),
                }
            )
    first, last = (entries[0], entries[-1]) if entries else (None, None)
    return {
        "receipt_version": RECEIPT_VERSION,
        "job": {
            key: status[key]
            for key in (
                "id",
                "tenant_id",
                "idempotency_key",
                "account_id",
                "board_id",
                "pin",
                "publish_at",
                "mode",
                "metadata",
                "created_at",
            )
        },
        "outcome": {
            key: status[key]
            for key in (
                "state",
                "external_ref",
                "last_error",
                "attempts",
                "updated_at",
                "state_entered_at",
                "next_run_at",
                "version",
            )
        },
        "attempts": attempts,
        "actions": actions,
        "evidence": {
            "events": len(entries),
            "first_event": _anchor(first),
            "last_event": _anchor(last),
            "how_to_verify": VERIFY_STATEMENT.format(genesis=GENESIS, job_id=status["id"]),
        },
    }


def render_markdown(receipt: dict[str, Any]) -> str:
    job, outcome, evidence = receipt["job"], receipt["outcome"], receipt["evidence"]
    pin = job["pin"] or {}
    lines = [
        f"# Receipt for job {job['id']}",
        "",
        f"**Outcome: {outcome['state']}**"
        + (f" (Pinterest pin {outcome['external_ref']})" if outcome["external_ref"] else ""),
        "",
        "## Job",
        "",
        f"- Tenant: {job['tenant_id']}",
        f"- Idempotency key: {_code(job['idempotency_key'])}",
        f"- Account: {_code(job['account_id'])}, board: {_code(job['board_id'])}",
        f"- Pin title: {_text(pin.get('title'))}",
        f"- Pin link: {_text(pin.get('link'))}",
        f"- Media: {_text((pin.get('media_source') or {}).get('url'))}",
        f"- Mode: {job['mode']}; publish at: {job['publish_at'] or 'as soon as possible'}",
        f"- Created: {job['created_at']}; last change: {outcome['updated_at']} "
        f"(version {outcome['version']})",
    ]
    if outcome["last_error"]:
        err = outcome["last_error"]
        lines.append(f"- Last error: {_code(err['code'])}: {_text(err['message'])}")
    lines += ["", f"## Attempts ({len(receipt['attempts'])})", ""]
    if not receipt["attempts"]:
        lines.append("No attempt has started yet.")
    for attempt in receipt["attempts"]:
        line = (
            f"{attempt['attempt']}. {attempt['outcome']} - started {attempt['started_at']} "
            f"by {_code(attempt['worker_id'])}"
        )
        if attempt["ended_at"]:
            line += f", ended {attempt['ended_at']}"
        if attempt["external_ref"]:
            line += f"; pin {_code(attempt['external_ref'])}"
        if attempt["error"]:
            err = attempt["error"]
            line += f"; error {_code(err['code'])}: {_text(err['message'])}"
            if err["ambiguous"]:
                line += " (ambiguous: the upstream may have applied it)"
        if attempt["retry"]:
            line += f"; retry at {attempt['retry']['next_run_at']}"
        lines.append(line)
    if receipt["actions"]:
        lines += ["", "## Human actions", ""]
        for action in receipt["actions"]:
            reason = f": {_text(action['reason'])}" if action["reason"] else ""
            lines.append(
                f"- {action['occurred_at']} {action['type']} by {_code(action['actor'])}{reason}"
            )
    lines += ["", "## Evidence", "", f"- Events: {evidence['events']}"]
    for name in ("first_event", "last_event"):
        anchor = evidence[name]
        if anchor:
            lines.append(
                f"- {name.replace('_', ' ').capitalize()}: {anchor['type']} v{anchor['version']} "
                f"at {anchor['occurred_at']}, hash `{anchor['hash']}`"
            )
    lines += ["", evidence["how_to_verify"], ""]
    return "\n".join(lines)


def _anchor(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    return {
        key: entry[key] for key in ("id", "type", "version", "occurred_at", "prev_hash", "hash")
    }


def _orphan(
    attempts: list[dict[str, Any]], by_number: dict[int, dict[str, Any]], data: dict[str, Any]
) -> dict[str, Any]:
    # An outcome without a recorded start cannot happen through the state machine; keep it
    # visible rather than dropping it.
    attempt: dict[str, Any] = {
        "attempt": data["attempt"],
        "worker_id": None,
        "started_at": None,
        "ended_at": None,
        "outcome": "unknown",
        "external_ref": None,
        "error": None,
        "retry": None,
        "receipt": {},
    }
    attempts.append(attempt)
    by_number[data["attempt"]] = attempt
    return attempt


def _code(value: Any) -> str:
    return "`" + str(value).replace("`", "'") + "`" if value is not None else "-"


def _text(value: Any) -> str:
    if value is None:
        return "-"
    # Keep user text on one line and stop it from being read as Markdown structure.
    text = " ".join(str(value).split())
    for char in "\\`*_[]<>#|":
        text = text.replace(char, "\\" + char)
    return text
