"""`NewJob`: a validated request to create a publish job, and its idempotency fingerprint.

The rules here are the product's, not the transport's: Pinterest's field limits, the sandbox
outcomes, metadata limits (Stripe's: 50 keys, 40-character keys, 500-character values). The HTTP
layer checks JSON types and unknown fields first and then builds a `NewJob`; any rule broken here
raises `InvalidJob` naming the field. Never imports web, database or HTTP-client code.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from ledger.audit import canonical_json
from ledger.errors import InvalidJob

MODES = ("sandbox", "pinterest")
SIMULATED_OUTCOMES = (
    "published",
    "rate_limited",
    "timeout",
    "server_error",
    "invalid_media",
    "board_not_found",
    "unauthorized",
)
MEDIA_SOURCE_TYPES = ("image_url",)
MAX_SIMULATE_STEPS = 50
ID_MAX = 128
TITLE_MAX = 100
DESCRIPTION_MAX = 800
LINK_MAX = 2048
ALT_TEXT_MAX = 500
URL_MAX = 2048
METADATA_MAX_KEYS = 50
METADATA_KEY_MAX = 40
METADATA_VALUE_MAX = 500


@dataclass(frozen=True)
class MediaSource:
    source_type: str
    url: str

    def __post_init__(self) -> None:
        if self.source_type not in MEDIA_SOURCE_TYPES:
            raise InvalidJob(
                "pin.media_source.source_type",
                f"must be one of {', '.join(MEDIA_SOURCE_TYPES)}, not {self.source_type!r}",
            )
        _check_url("pin.media_source.url", self.url, URL_MAX)


@dataclass(frozen=True)
class Pin:
    media_source: MediaSource
    title: str | None = None
    description: str | None = None
    link: str | None = None
    alt_text: str | None = None

    def __post_init__(self) -> None:
        _check_text("pin.title", self.title, TITLE_MAX)
        _check_text("pin.description", self.description, DESCRIPTION_MAX)
        _check_text("pin.alt_text", self.alt_text, ALT_TEXT_MAX)
        if self.link is not None:
            _check_url("pin.link", self.link, LINK_MAX)

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "description": self.description,
            "link": self.link,
            "alt_text": self.alt_text,
            "media_source": {
                "source_type": self.media_source.source_type,
                "url": self.media_source.url,
            },
        }


@dataclass(frozen=True)
class NewJob:
    account_id: str
    board_id: str
    pin: Pin
    publish_at: datetime | None = None
    mode: str = "sandbox"
    simulate: list[str] | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_id("account_id", self.account_id)
        _check_id("board_id", self.board_id)
        if self.publish_at is not None and self.publish_at.tzinfo is None:
            raise InvalidJob("publish_at", "must carry a timezone offset (RFC 3339)")
        if self.mode not in MODES:
            raise InvalidJob("mode", f"must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.simulate is not None:
            if self.mode != "sandbox":
                raise InvalidJob("simulate", "is only allowed with mode 'sandbox'")
            if not 1 <= len(self.simulate) <= MAX_SIMULATE_STEPS:
                raise InvalidJob("simulate", f"must list 1 to {MAX_SIMULATE_STEPS} outcomes")
            for i, outcome in enumerate(self.simulate):
                if outcome not in SIMULATED_OUTCOMES:
                    raise InvalidJob(
                        f"simulate[{i}]",
                        f"{outcome!r} is not an outcome; "
                        f"use one of {', '.join(SIMULATED_OUTCOMES)}",
                    )
        if len(self.metadata) > METADATA_MAX_KEYS:
            raise InvalidJob("metadata", f"may hold at most {METADATA_MAX_KEYS} keys")
        for key, value in self.metadata.items():
            if not 1 <= len(key) <= METADATA_KEY_MAX:
                raise InvalidJob("metadata", f"keys must be 1 to {METADATA_KEY_MAX} characters")
            if not isinstance(value, str) or len(value) > METADATA_VALUE_MAX:
                raise InvalidJob(
                    f"metadata.{key}",
                    f"must be a string of at most {METADATA_VALUE_MAX} characters",
                )

    def as_dict(self) -> dict[str, Any]:
        """The normalised request; equal requests give equal dicts (and fingerprints)."""
        return {
            "account_id": self.account_id,
            "board_id": self.board_id,
            "pin": self.pin.as_dict(),
            "publish_at": self.publish_at.astimezone(UTC).isoformat() if self.publish_at else None,
            "mode": self.mode,
            "simulate": list(self.simulate) if self.simulate is not None else None,
            "metadata": dict(self.metadata),
        }

    def fingerprint(self) -> str:
        return hashlib.sha256(canonical_json(self.as_dict())).hexdigest()


def _check_id(name: str, value: str) -> None:
    if not value or len(value) > ID_MAX:
        raise InvalidJob(name, f"must be 1 to {ID_MAX} characters")
    if not value.isprintable() or value != value.strip():
        raise InvalidJob(name, "must be printable with no surrounding whitespace")


def _check_text(name: str, value: str | None, limit: int) -> None:
    if value is not None and len(value) > limit:
        raise InvalidJob(name, f"must be at most {limit} characters (got {len(value)})")


def _check_url(name: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise InvalidJob(name, f"must be at most {limit} characters (got {len(value)})")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidJob(name, "must be an absolute http or https URL")
