"""Settings: one frozen object made from the environment in one place (`Settings.from_env`).

Every variable is documented in README.md's configuration table; a bad value stops start-up with
a message naming the variable.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from jobledger.webhook_settings import WebhookSettings, WebhookSettingsError
from ledger.retry import RetryPolicy
from projections.stuck import StuckThresholds
from storage.config import Database, DatabaseURLError, parse_database_url

DEFAULT_DATABASE_URL = "sqlite:///./ledger.db"
_STUCK = StuckThresholds()


class SettingsError(ValueError):
    """A configuration variable has a value the service cannot use."""


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    admin_key: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    access_log: bool = False  # uvicorn's one line per request
    processes: int = 1  # serving processes for roles all/api (PostgreSQL only when > 1)
    job_max_attempts: int = 5
    job_retry_base_seconds: float = 30.0
    job_retry_cap_seconds: float = 3600.0
    audit_checkpoint_seconds: float = 60.0
    db_pool_size: int = 5
    db_max_overflow: int = 10
    db_fail_fast_seconds: float = 1.0  # PostgreSQL store breaker (storage/breaker.py)
    startup_wait_seconds: float = 60.0  # `ledger serve` waits this long for the store; 0: not
    max_body_bytes: int = 256 * 1024
    rate_limit_per_second: float = 100.0  # per API key (per client IP without one); 0: none
    rate_limit_burst: int = 1000
    api_key_cache_seconds: float = 5.0  # see api.auth.KeyCache; 0: no cache
    # -- worker (issue 4) --
    worker_id: str | None = None  # default: worker:<hostname>:<pid>
    worker_concurrency: int = 4
    worker_lease_seconds: float = 120.0
    worker_poll_seconds: float = 1.0
    worker_shutdown_grace_seconds: float = 20.0
    pinterest_api_base: str = "https://api.pinterest.com"
    pinterest_timeout_seconds: float = 20.0
    pinterest_tokens: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    pacing_account_capacity: float = 50.0
    pacing_account_refill_per_second: float = 1.0
    pacing_global_capacity: float = 200.0
    pacing_global_refill_per_second: float = 3.0
    sandbox_latency_seconds: float = 0.0
    # -- projections: stuck report, readiness, metrics --
    stuck_queued_seconds: float = _STUCK.queued_seconds
    stuck_overdue_seconds: float = _STUCK.overdue_seconds
    stuck_lease_grace_seconds: float = _STUCK.lease_grace_seconds
    stuck_max_retrying_attempts: int = _STUCK.max_retrying_attempts
    ready_max_lag_events: int = 1000
    metrics_token: str | None = field(default=None, repr=False)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        d = cls()
        settings = cls(
            database_url=env.get("LEDGER_DATABASE_URL", d.database_url) or d.database_url,
            admin_key=env.get("LEDGER_ADMIN_KEY") or None,
            host=env.get("LEDGER_HOST", d.host),
            port=_int(env, "LEDGER_PORT", d.port, minimum=0),
            access_log=_bool(env, "LEDGER_ACCESS_LOG", d.access_log),
            processes=_int(env, "LEDGER_PROCESSES", d.processes, minimum=1),
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
            db_fail_fast_seconds=_positive(
                env, "LEDGER_DB_FAIL_FAST_SECONDS", d.db_fail_fast_seconds
            ),
            startup_wait_seconds=_float(env, "LEDGER_STARTUP_WAIT_SECONDS", d.startup_wait_seconds),
            max_body_bytes=_int(env, "LEDGER_MAX_BODY_BYTES", d.max_body_bytes, minimum=1),
            rate_limit_per_second=_float(
                env, "LEDGER_RATE_LIMIT_PER_SECOND", d.rate_limit_per_second
            ),
            rate_limit_burst=_int(env, "LEDGER_RATE_LIMIT_BURST", d.rate_limit_burst, minimum=1),
            api_key_cache_seconds=_float(
                env, "LEDGER_API_KEY_CACHE_SECONDS", d.api_key_cache_seconds
            ),
            worker_id=env.get("LEDGER_WORKER_ID") or None,
            worker_concurrency=_int(
                env, "LEDGER_WORKER_CONCURRENCY", d.worker_concurrency, minimum=1
            ),
            worker_lease_seconds=_float(env, "LEDGER_WORKER_LEASE_SECONDS", d.worker_lease_seconds),
            worker_poll_seconds=_float(env, "LEDGER_WORKER_POLL_SECONDS", d.worker_poll_seconds),
            worker_shutdown_grace_seconds=_float(
                env, "LEDGER_WORKER_SHUTDOWN_GRACE_SECONDS", d.worker_shutdown_grace_seconds
            ),
            pinterest_api_base=(
                env.get("LEDGER_PINTEREST_API_BASE") or d.pinterest_api_base
            ).rstrip("/"),
            pinterest_timeout_seconds=_float(
                env, "LEDGER_PINTEREST_TIMEOUT_SECONDS", d.pinterest_timeout_seconds
            ),
            pinterest_tokens=_tokens(env),
            pacing_account_capacity=_float(
                env, "LEDGER_PACING_ACCOUNT_CAPACITY", d.pacing_account_capacity
            ),
            pacing_account_refill_per_second=_float(
                env, "LEDGER_PACING_ACCOUNT_REFILL_PER_SECOND", d.pacing_account_refill_per_second
            ),
            pacing_global_capacity=_float(
                env, "LEDGER_PACING_GLOBAL_CAPACITY", d.pacing_global_capacity
            ),
            pacing_global_refill_per_second=_float(
                env, "LEDGER_PACING_GLOBAL_REFILL_PER_SECOND", d.pacing_global_refill_per_second
            ),
            sandbox_latency_seconds=_float(
                env, "LEDGER_SANDBOX_LATENCY_SECONDS", d.sandbox_latency_seconds
            ),
            stuck_queued_seconds=_float(env, "LEDGER_STUCK_QUEUED_SECONDS", d.stuck_queued_seconds),
            stuck_overdue_seconds=_float(
                env, "LEDGER_STUCK_OVERDUE_SECONDS", d.stuck_overdue_seconds
            ),
            stuck_lease_grace_seconds=_float(
                env, "LEDGER_STUCK_LEASE_GRACE_SECONDS", d.stuck_lease_grace_seconds
            ),
            stuck_max_retrying_attempts=_int(
                env, "LEDGER_STUCK_MAX_RETRYING_ATTEMPTS", d.stuck_max_retrying_attempts, minimum=0
            ),
            ready_max_lag_events=_int(
                env, "LEDGER_READY_MAX_LAG_EVENTS", d.ready_max_lag_events, minimum=0
            ),
            metrics_token=env.get("LEDGER_METRICS_TOKEN") or None,
            webhooks=_webhooks(env),
        )
        settings.database()  # fail fast on a bad URL
        settings.retry_policy()
        if settings.worker_lease_seconds <= 0:
            raise SettingsError("LEDGER_WORKER_LEASE_SECONDS must be more than zero")
        if settings.pinterest_timeout_seconds <= 0:
            raise SettingsError("LEDGER_PINTEREST_TIMEOUT_SECONDS must be more than zero")
        for name, rate in (
            ("LEDGER_PACING_ACCOUNT_REFILL_PER_SECOND", settings.pacing_account_refill_per_second),
            ("LEDGER_PACING_GLOBAL_REFILL_PER_SECOND", settings.pacing_global_refill_per_second),
        ):
            if rate <= 0:
                raise SettingsError(f"{name} must be more than zero")
        for name, capacity in (
            ("LEDGER_PACING_ACCOUNT_CAPACITY", settings.pacing_account_capacity),
            ("LEDGER_PACING_GLOBAL_CAPACITY", settings.pacing_global_capacity),
        ):
            if capacity < 1:
                raise SettingsError(f"{name} must be at least 1")
        if not settings.pinterest_api_base.startswith(("http://", "https://")):
            raise SettingsError("LEDGER_PINTEREST_API_BASE must be an http or https URL")
        if settings.admin_key is not None and len(settings.admin_key) < 16:
            raise SettingsError("LEDGER_ADMIN_KEY must be at least 16 characters")
        if settings.metrics_token is not None and len(settings.metrics_token) < 16:
            raise SettingsError("LEDGER_METRICS_TOKEN must be at least 16 characters")
        return settings

    def database(self) -> Database:
        try:
            return parse_database_url(
                self.database_url, pool_size=self.db_pool_size, max_overflow=self.db_max_overflow
            )
        except DatabaseURLError as error:
            raise SettingsError(f"LEDGER_DATABASE_URL: {error}") from None

    @property
    def api_threads(self) -> int:
        """Threads that may run ledger calls for the API at once: one per pooled connection."""
        return self.db_pool_size + self.db_max_overflow

    def stuck_thresholds(self) -> StuckThresholds:
        return StuckThresholds(
            queued_seconds=self.stuck_queued_seconds,
            overdue_seconds=self.stuck_overdue_seconds,
            lease_grace_seconds=self.stuck_lease_grace_seconds,
            max_retrying_attempts=self.stuck_max_retrying_attempts,
        )

    def retry_policy(self) -> RetryPolicy:
        try:
            return RetryPolicy(
                max_attempts=self.job_max_attempts,
                base_seconds=self.job_retry_base_seconds,
                cap_seconds=self.job_retry_cap_seconds,
            )
        except ValueError as error:
            raise SettingsError(f"LEDGER_JOB_RETRY_*: {error}") from None


def _webhooks(env: Mapping[str, str]) -> WebhookSettings:
    try:
        return WebhookSettings.from_env(env)
    except WebhookSettingsError as error:
        raise SettingsError(str(error)) from None


def _tokens(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """Pinterest OAuth tokens per account: LEDGER_PINTEREST_TOKENS (a JSON object
    account_id -> token) or LEDGER_PINTEREST_TOKENS_FILE (a file holding that JSON object)."""
    raw = env.get("LEDGER_PINTEREST_TOKENS") or None
    name = "LEDGER_PINTEREST_TOKENS"
    path = env.get("LEDGER_PINTEREST_TOKENS_FILE") or None
    if raw is not None and path is not None:
        raise SettingsError("set LEDGER_PINTEREST_TOKENS or LEDGER_PINTEREST_TOKENS_FILE, not both")
    if path is not None:
        name = "LEDGER_PINTEREST_TOKENS_FILE"
        try:
            with open(path, encoding="utf-8") as handle:
                raw = handle.read()
        except OSError as error:
            raise SettingsError(f"{name}: cannot read {path!r}: {error.strerror}") from None
    if raw is None:
        return ()
    try:
        data = json.loads(raw)
    except ValueError:
        raise SettingsError(f"{name}: not valid JSON") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in data.items()
    ):
        raise SettingsError(f"{name}: must be a JSON object of account_id -> token strings")
    return tuple(sorted(data.items()))


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


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be 1 or 0 (true/false), not {value!r}")


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    value = _float(env, name, default)
    if value <= 0:
        raise SettingsError(f"{name}={env.get(name)!r} must be more than zero seconds")
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
