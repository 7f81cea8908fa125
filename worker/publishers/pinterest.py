"""The live Pinterest publisher: POST {base}/v5/pins through httpx (SPEC section 4).

- The account's OAuth bearer token comes from the token map the composition root passes in
  (settings `LEDGER_PINTEREST_TOKENS` / `_FILE`); an account without one fails terminally.
- Responses are classified by `classification.classify` (a table); `Retry-After` (seconds or
  an HTTP date) is honoured as the floor of the retry delay, and a 429 without it falls back to
  `x-ratelimit-reset`. The `x-pinterest-rid` header is kept in every receipt.
- Transport errors: a connect error or a connect/pool timeout means the request never left, so
  it is retryable and NOT ambiguous; any other timeout or transport error happened after the
  request may have been sent, so it is retryable AND ambiguous.
- `reconcile` lists the board's pins (newest first, a bounded number of pages) and matches the
  job's link and title on a pin created since the ambiguous attempt started (less a clock-skew
  margin). Pinterest has no idempotency key for pins, so this is the only guard against a
  duplicate; a failed listing is reported as a failure, never guessed.

Sync `httpx.Client`, one per publisher, shared by the attempt threads: the ledger has no
asyncio API, every attempt is a few blocking ledger calls around one or two requests, and
pacing caps the request rate far below where a thread per attempt costs anything.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from ledger.job import AttemptFailure, Job
from worker.publishers import Outcome, Published
from worker.publishers.classification import DEFAULT_RULES, Rule, classify

PIN_FIELDS = ("title", "description", "link", "alt_text")


class PinterestPublisher:
    def __init__(
        self,
        base_url: str,
        tokens: Mapping[str, str],
        *,
        timeout_seconds: float = 20.0,
        rules: tuple[Rule, ...] = DEFAULT_RULES,
        transport: httpx.BaseTransport | None = None,
        reconcile_pages: int = 5,
        clock_skew_seconds: float = 120.0,
        max_connections: int = 8,
    ) -> None:
        self.tokens = dict(tokens)
        self.rules = rules
        self.reconcile_pages = reconcile_pages
        self.clock_skew = timedelta(seconds=clock_skew_seconds)
        self.client = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=timeout_seconds,
            transport=transport,
            follow_redirects=False,
            headers={"User-Agent": "job-ledger/0.1", "Accept": "application/json"},
            limits=httpx.Limits(max_connections=max_connections),
        )

    def close(self) -> None:
        self.client.close()

    # -- publish --

    def publish(self, job: Job, attempt: int) -> Outcome:
        token = self.tokens.get(job.account_id)
        if token is None:
            return _no_token(job)
        started = time.monotonic()
        try:
            response = self.client.post(
                "/v5/pins", json=pin_body(job), headers={"Authorization": f"Bearer {token}"}
            )
        except httpx.HTTPError as error:
            return transport_failure(error, attempt=attempt, started=started)
        receipt = _receipt(response, started, attempt=attempt)
        if response.status_code in (200, 201):
            data = _json(response)
            pin_id = data.get("id") if isinstance(data, dict) else None
            if isinstance(pin_id, str) and pin_id:
                return Published(pin_id, receipt)
            return AttemptFailure(
                "unexpected_response",
                f"Pinterest answered {response.status_code} without a pin id",
                retryable=True,
                ambiguous=True,  # it said "created": reconcile before trying again
                receipt=receipt,
            )
        return self._failure(response, receipt)

    # -- reconcile --

    def reconcile(self, job: Job, since: datetime) -> Outcome | None:
        token = self.tokens.get(job.account_id)
        if token is None:
            return _no_token(job)
        want_link = job.pin.get("link") or ""
        want_title = job.pin.get("title") or ""
        not_before = since - self.clock_skew
        params: dict[str, Any] = {"page_size": 100}
        for page in range(self.reconcile_pages):
            started = time.monotonic()
            try:
                response = self.client.get(
                    f"/v5/boards/{job.board_id}/pins",
                    params=params,
                    headers={"Authorization": f"Bearer {token}"},
                )
            except httpx.HTTPError as error:
                failure = transport_failure(error, attempt=job.attempts, started=started)
                return _reconcile_failed(failure.message, failure.receipt)
            receipt = _receipt(response, started, attempt=job.attempts)
            if response.status_code != 200:
                failure = self._failure(response, receipt)
                if not failure.retryable:
                    return failure  # e.g. the board is gone: publishing cannot work either
                return _reconcile_failed(failure.message, receipt)
            data = _json(response)
            items = data.get("items") if isinstance(data, dict) else None
            if not isinstance(items, list):
                return _reconcile_failed("the board's pin list had no items", receipt)
            for item in items:
                if not isinstance(item, dict):
                    continue
                created = parse_pinterest_time(item.get("created_at"))
                if (
                    (item.get("link") or "") == want_link
                    and (item.get("title") or "") == want_title
                    and created is not None
                    and created >= not_before
                    and isinstance(item.get("id"), str)
                ):
                    return Published(
                        item["id"],
                        {
                            **receipt,
                            "reconciled": True,
                            "reconciled_since": since.isoformat(),
                            "pin_created_at": item.get("created_at"),
                            "pages_read": page + 1,
                        },
                    )
            bookmark = data.get("bookmark")
            if not bookmark:
                return None
            params = {"page_size": 100, "bookmark": bookmark}
        return None  # not in the newest pages: treated as not applied (documented)

    # -- internals --

    def _failure(self, response: httpx.Response, receipt: dict[str, Any]) -> AttemptFailure:
        data = _json(response)
        code = data.get("code") if isinstance(data, dict) else None
        message = data.get("message") if isinstance(data, dict) else None
        code = code if isinstance(code, int) and not isinstance(code, bool) else None
        message = message if isinstance(message, str) else response.text[:200]
        found = classify(response.status_code, code, message, self.rules)
        receipt.update(pinterest_code=code, pinterest_message=message[:500])
        retry_after = retry_after_seconds(response.headers) if found.retryable else None
        return AttemptFailure(
            found.error_code,
            f"Pinterest answered {response.status_code}"
            + (f" (code {code})" if code is not None else "")
            + f": {message}",
            retryable=found.retryable,
            retry_after=retry_after,
            receipt=receipt,
        )


def pin_body(job: Job) -> dict[str, Any]:
    body: dict[str, Any] = {"board_id": job.board_id}
    for name in PIN_FIELDS:
        if job.pin.get(name) is not None:
            body[name] = job.pin[name]
    body["media_source"] = dict(job.pin["media_source"])
    return body


def transport_failure(error: httpx.HTTPError, *, attempt: int, started: float) -> AttemptFailure:
    never_sent = isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    timed_out = isinstance(error, httpx.TimeoutException)
    code = "timeout" if timed_out else "network_error"
    where = "before the request was sent" if never_sent else "after the request may have been sent"
    return AttemptFailure(
        code,
        f"{type(error).__name__} {where}: {error}".strip(),
        retryable=True,
        ambiguous=not never_sent,
        receipt={
            "attempt": attempt,
            "error": type(error).__name__,
            "latency_ms": round((time.monotonic() - started) * 1000, 1),
        },
    )


def retry_after_seconds(headers: httpx.Headers, now: datetime | None = None) -> float | None:
    raw = headers.get("retry-after")
    if raw is not None:
        raw = raw.strip()
        try:
            return max(0.0, float(raw))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    reset = headers.get("x-ratelimit-reset")
    if reset is not None:
        try:
            return max(0.0, float(reset))
        except ValueError:
            return None
    return None


def parse_pinterest_time(value: Any) -> datetime | None:
    """Pinterest writes `2020-01-01T20:10:40` (UTC, no offset); offsets are accepted too."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _receipt(response: httpx.Response, started: float, *, attempt: int) -> dict[str, Any]:
    receipt: dict[str, Any] = {
        "attempt": attempt,
        "status": response.status_code,
        "x_pinterest_rid": response.headers.get("x-pinterest-rid"),
        "latency_ms": round((time.monotonic() - started) * 1000, 1),
    }
    for name in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "retry-after"):
        if name in response.headers:
            receipt[name.replace("-", "_")] = response.headers[name]
    return receipt


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _no_token(job: Job) -> AttemptFailure:
    return AttemptFailure(
        "unauthorized",
        f"no Pinterest token is configured for account {job.account_id!r} "
        "(LEDGER_PINTEREST_TOKENS)",
        retryable=False,
        receipt={"configuration": "missing_token"},
    )


def _reconcile_failed(message: str, receipt: dict[str, Any]) -> AttemptFailure:
    return AttemptFailure(
        "reconcile_failed",
        f"could not check whether the earlier ambiguous attempt was applied: {message}",
        retryable=True,
        ambiguous=True,  # still unknown: the next attempt reconciles again
        receipt={**receipt, "reconcile": "failed"},
    )
