"""Webhook settings (part of `Settings`, read from the environment in one place).

Variables (documented in README's configuration table): LEDGER_ALLOW_PRIVATE_TARGETS,
LEDGER_WEBHOOK_RETRY_SCHEDULE, LEDGER_WEBHOOK_TIMEOUT_SECONDS, LEDGER_WEBHOOK_CONCURRENCY,
LEDGER_WEBHOOK_ENDPOINT_CONCURRENCY, LEDGER_WEBHOOK_DISABLE_AFTER_SECONDS,
LEDGER_WEBHOOK_DISABLE_AFTER_DEAD_LETTERS, LEDGER_SECRET_KEY (base64 of 32 bytes sealing endpoint
secrets at rest; on SQLite a key file beside the database when unset; on PostgreSQL required
for webhooks).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from delivery.crypto import SecretBox, generate_key
from delivery.keys import EndpointKeys
from delivery.retry import DEFAULT_SCHEDULE, RetrySchedule
from storage.config import Database

log = logging.getLogger("jobledger")


class WebhookSettingsError(ValueError):
    pass


@dataclass(frozen=True)
class WebhookSettings:
    allow_private_targets: bool | None = None  # None: allowed on SQLite only
    retry_schedule: tuple[float, ...] = DEFAULT_SCHEDULE.delays
    timeout_seconds: float = 5.0
    concurrency: int = 64
    endpoint_concurrency: int = 8
    disable_after_seconds: float = 5 * 24 * 3600.0
    disable_after_dead_letters: int = 0
    secret_key: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WebhookSettings:
        d = cls()
        try:
            schedule = (
                RetrySchedule.parse(env["LEDGER_WEBHOOK_RETRY_SCHEDULE"]).delays
                if env.get("LEDGER_WEBHOOK_RETRY_SCHEDULE")
                else d.retry_schedule
            )
        except ValueError as error:
            raise WebhookSettingsError(f"LEDGER_WEBHOOK_RETRY_SCHEDULE: {error}") from None
        settings = cls(
            allow_private_targets=_flag(env, "LEDGER_ALLOW_PRIVATE_TARGETS"),
            retry_schedule=schedule,
            timeout_seconds=_number(env, "LEDGER_WEBHOOK_TIMEOUT_SECONDS", d.timeout_seconds),
            concurrency=int(_number(env, "LEDGER_WEBHOOK_CONCURRENCY", d.concurrency)),
            endpoint_concurrency=int(
                _number(env, "LEDGER_WEBHOOK_ENDPOINT_CONCURRENCY", d.endpoint_concurrency)
            ),
            disable_after_seconds=_number(
                env, "LEDGER_WEBHOOK_DISABLE_AFTER_SECONDS", d.disable_after_seconds
            ),
            disable_after_dead_letters=int(
                _number(env, "LEDGER_WEBHOOK_DISABLE_AFTER_DEAD_LETTERS", 0, minimum=0)
            ),
            secret_key=env.get("LEDGER_SECRET_KEY") or None,
        )
        if not 0 < settings.timeout_seconds <= 30:
            raise WebhookSettingsError("LEDGER_WEBHOOK_TIMEOUT_SECONDS must be in (0, 30]")
        if settings.concurrency < 1 or settings.endpoint_concurrency < 1:
            raise WebhookSettingsError("LEDGER_WEBHOOK_*CONCURRENCY must be at least 1")
        if settings.secret_key is not None:
            settings.box()  # fail fast on a malformed key
        return settings

    def private_targets_allowed(self, database: Database) -> bool:
        if self.allow_private_targets is not None:
            return self.allow_private_targets
        return not database.is_postgres

    def box(self, database: Database | None = None) -> SecretBox | None:
        """The sealing key: LEDGER_SECRET_KEY, or on SQLite a key file beside the database
        (made on first use, mode 0600). None on PostgreSQL without a key: webhooks then refuse
        to register endpoints, naming LEDGER_SECRET_KEY."""
        if self.secret_key is not None:
            try:
                return SecretBox.from_setting(self.secret_key)
            except ValueError as error:
                raise WebhookSettingsError(f"LEDGER_SECRET_KEY: {error}") from None
        if database is None or database.is_postgres:
            return None
        return SecretBox.from_setting(_key_file(Path(f"{database.path}.secret-key")))

    def endpoint_keys(self, database: Database) -> EndpointKeys | None:
        box = self.box(database)
        if box is None:
            log.warning("LEDGER_SECRET_KEY is not set: webhook endpoints cannot be registered")
            return None
        return EndpointKeys(box)


def _key_file(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    key = generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as file:
        file.write(key + "\n")
    return key


def _flag(env: Mapping[str, str], name: str) -> bool | None:
    value = env.get(name, "").strip().lower()
    if not value:
        return None
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise WebhookSettingsError(f"{name} must be 1 or 0 (true/false), not {value!r}")


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise WebhookSettingsError(f"{name} must be a number, not {text!r}") from None
    if value != value or value < minimum or value in (float("inf"),):
        raise WebhookSettingsError(f"{name} must be a finite number >= {minimum:g}")
    return value
