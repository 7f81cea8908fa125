"""Settings: one frozen object made from the environment in one place (`Settings.from_env`).

Every variable is documented in README.md's configuration table; a bad value stops start-up with
a message naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ledger.retry import RetryPolicy
from storage.config import Database, DatabaseURLError, parse_database_url

DEFAULT_DATABASE_URL = "sqlite:///./ledger.db"


class SettingsError(ValueError):
    """A configuration variable has a value the service cannot use."""


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    admin_key: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    job_max_attempts: int = 5
    job_retry_base_seconds: float = 30.0
    job_retry_cap_seconds: float = 3600.0
    audit_checkpoint_seconds: float = 60.0
    db_pool_size: int = 5
    db_max_overflow: int = 10

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        d = cls()
        settings = cls(
            database_url=env.get("LEDGER_DATABASE_URL", d.database_url) or d.database_url,
            admin_key=env.get("LEDGER_ADMIN_KEY") or None,
            host=env.get("LEDGER_HOST", d.host),
            port=_int(env, "LEDGER_PORT", d.port, minimum=0),
            job_max_attempts=_int(env, "LEDGER_JOB_MAX_ATTEMPTS", d.job_max_attempts, minimum=1),
            job_retry_base_seconds=_float(
                env, "LEDGER_JOB_RETRY_BASE_SECONDS", d.job_retry_base_seconds
            ),
            job_retry_cap_seconds=_float(
                env, "LEDGER_JOB_RETRY_CAP_SECONDS", d.job_retry_cap_seconds
            ),
            audit_checkpoint_seconds=_float(
                env, "LEDGER_AUDIT_CHECKPOINT_SECONDS", d.audit_checkpoint_seconds
            ),
            db_pool_size=_int(env, "LEDGER_DB_POOL_SIZE", d.db_pool_size, minimum=1),
            db_max_overflow=_int(env, "LEDGER_DB_MAX_OVERFLOW", d.db_max_overflow, minimum=0),
        )
        settings.database()  # fail fast on a bad URL
        settings.retry_policy()
        return settings

    def database(self) -> Database:
        try:
            return parse_database_url(
                self.database_url, pool_size=self.db_pool_size, max_overflow=self.db_max_overflow
            )
        except DatabaseURLError as error:
            raise SettingsError(f"LEDGER_DATABASE_URL: {error}") from None

    def retry_policy(self) -> RetryPolicy:
        try:
            return RetryPolicy(
                max_attempts=self.job_max_attempts,
                base_seconds=self.job_retry_base_seconds,
                cap_seconds=self.job_retry_cap_seconds,
            )
        except ValueError as error:
            raise SettingsError(f"LEDGER_JOB_RETRY_*: {error}") from None


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise SettingsError(f"{name}={raw!r} must be at least {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise SettingsError(f"{name}={raw!r} must be a finite number of seconds, zero or more")
    return value
