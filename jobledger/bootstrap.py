"""`build(settings)`: the one place where the service's parts are constructed and wired."""

from __future__ import annotations

import random
from dataclasses import dataclass

from api.config import ApiConfig
from jobledger.settings import Settings
from ledger.application import JobLedger
from ledger.clock import Clock, SystemClock
from storage.breaker import guard_ledger
from storage.config import Database, migrate


@dataclass
class Service:
    settings: Settings
    database: Database
    ledger: JobLedger

    def close(self) -> None:
        self.ledger.close()


def build(
    settings: Settings,
    *,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    run_migrations: bool = True,
) -> Service:
    database = settings.database()
    if run_migrations:
        migrate(database)
    ledger = JobLedger(
        database.eventsourcing_env(),
        clock=clock or SystemClock(),
        retry_policy=settings.retry_policy(),
        rng=rng,
        endpoint_secrets=settings.webhooks.endpoint_keys(database),
    )
    # PostgreSQL: fail fast while the store is down, recover by itself (storage/breaker.py)
    guard_ledger(ledger, fail_fast_seconds=settings.db_fail_fast_seconds)
    return Service(settings=settings, database=database, ledger=ledger)


def api_config(settings: Settings) -> ApiConfig:
    """What the HTTP app needs from the settings (the app itself never reads them)."""
    return ApiConfig(
        admin_key=settings.admin_key,
        max_body_bytes=settings.max_body_bytes,
        rate_limit_per_second=settings.rate_limit_per_second,
        rate_limit_burst=settings.rate_limit_burst,
        key_cache_seconds=settings.api_key_cache_seconds,
        threads=settings.api_threads,
        stuck_thresholds=settings.stuck_thresholds(),
        ready_max_lag_events=settings.ready_max_lag_events,
        metrics_token=settings.metrics_token,
        allow_private_targets=settings.webhooks.private_targets_allowed(settings.database()),
        console_secret=console_secret(settings),
    )


CONSOLE_SECRET_LABEL = "job-ledger console sessions v1"  # noqa: S105 - a label, not a secret


def console_secret(settings: Settings) -> bytes | None:
    """The console's session secret, derived from the webhook sealing key (so every process of
    one deployment shares it); None without one, and the app then makes a random one."""
    box = settings.webhooks.box(settings.database())
    return box.derive(CONSOLE_SECRET_LABEL) if box is not None else None
