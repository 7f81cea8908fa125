"""Failure classification for the live publisher: a table plus one pure function.

`classify(status, code, message)` walks `DEFAULT_RULES` in order; the first rule whose status,
Pinterest error code and message pattern all match decides the error code recorded in the
ledger and whether it is retryable (SPEC section 4). A `None` field matches anything. Pass your
own rules to `PinterestPublisher(rules=...)` to change the classes; nothing else needs to change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    statuses: tuple[int, int]  # inclusive range of HTTP statuses
    code: int | None  # Pinterest's error `code`, None for any
    message: str | None  # case-insensitive regex searched in the message, None for any
    error_code: str  # what the ledger records
    retryable: bool

    def matches(self, status: int, code: int | None, message: str) -> bool:
        low, high = self.statuses
        return (
            low <= status <= high
            and (self.code is None or self.code == code)
            and (
                self.message is None or re.search(self.message, message, re.IGNORECASE) is not None
            )
        )


@dataclass(frozen=True)
class FailureClass:
    error_code: str
    retryable: bool


def _one(status: int) -> tuple[int, int]:
    return (status, status)


DEFAULT_RULES: tuple[Rule, ...] = (
    # 429: rate limited, unless Pinterest says the pin looks like spam (retrying won't help)
    Rule(_one(429), None, r"spam", "spam_rejected", retryable=False),
    Rule(_one(429), None, None, "rate_limited", retryable=True),
    Rule(_one(400), 1, None, "invalid_url", retryable=False),
    Rule(_one(400), None, None, "invalid_request", retryable=False),
    Rule(_one(401), None, None, "unauthorized", retryable=False),
    Rule(_one(403), 233, None, "invalid_media", retryable=False),  # image too small
    Rule(_one(403), 235, None, "invalid_media", retryable=False),  # image broken
    Rule(_one(403), 29, None, "forbidden", retryable=False),  # not permitted
    Rule(_one(403), None, None, "forbidden", retryable=False),
    Rule(_one(404), 40, None, "board_not_found", retryable=False),
    Rule(_one(404), 2031, None, "section_not_found", retryable=False),
    Rule(_one(404), None, None, "not_found", retryable=False),
    Rule(_one(408), None, None, "timeout", retryable=True),
    Rule((500, 599), None, None, "server_error", retryable=True),
    Rule((400, 499), None, None, "client_error", retryable=False),
)
UNEXPECTED = FailureClass("unexpected_response", retryable=False)


def classify(
    status: int, code: int | None, message: str, rules: tuple[Rule, ...] = DEFAULT_RULES
) -> FailureClass:
    for rule in rules:
        if rule.matches(status, code, message):
            return FailureClass(rule.error_code, rule.retryable)
    return UNEXPECTED
