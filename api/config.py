"""`ApiConfig`: what the HTTP app needs to know, given by the composition root.

The app never reads the environment; `jobledger` builds this from `Settings`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from projections.stuck import StuckThresholds

DEFAULT_MAX_BODY_BYTES = 256 * 1024
DEFAULT_READY_MAX_LAG_EVENTS = 1000


@dataclass(frozen=True)
class ApiConfig:
    # LEDGER_ADMIN_KEY: the bootstrap admin key (only its sha256 is kept by the app).
    admin_key: str | None = field(default=None, repr=False)
    # LEDGER_MAX_BODY_BYTES: larger request bodies are refused with 413 before parsing.
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # Ledger calls that may run at once (worker threads): the DB pool's size plus overflow.
    threads: int = 15
    # Seconds a client is told to wait (Retry-After) when the store is unavailable.
    retry_after_seconds: int = 5
    # LEDGER_STUCK_*: when a job counts as stuck in `GET /v1/ops/stuck` and /metrics.
    stuck_thresholds: StuckThresholds = field(default_factory=StuckThresholds)
    # LEDGER_READY_MAX_LAG_EVENTS: /readyz fails while a projection is further behind the log.
    ready_max_lag_events: int = DEFAULT_READY_MAX_LAG_EVENTS
    # LEDGER_METRICS_TOKEN: when set, /metrics wants it as a bearer token; else it is open.
    metrics_token: str | None = field(default=None, repr=False)
    # LEDGER_ALLOW_PRIVATE_TARGETS: webhook URLs may be http or private/loopback addresses.
    allow_private_targets: bool = False
    # Signs console sessions and CSRF tokens (`api.console.session`); derived from the webhook
    # sealing key by the composition root. None: a random secret per app (sessions end when
    # the process restarts and are not shared between processes).
    console_secret: bytes | None = field(default=None, repr=False)
    # LEDGER_RATE_LIMIT_PER_SECOND / _BURST: requests a second per API key (per client IP
    # without one), bursts of `rate_limit_burst` (`api.rate_limit`); 0: no limit (the default
    # of an app built in code; `ledger serve` takes the Settings' defaults).
    rate_limit_per_second: float = 0.0
    rate_limit_burst: int = 1
    # LEDGER_API_KEY_CACHE_SECONDS: how long a valid API key is trusted without reading the
    # store again (`api.auth.KeyCache`): the bound on a revocation reaching *other* processes.
    key_cache_seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1:
            raise ValueError("max_body_bytes must be at least 1")
        if self.threads < 1:
            raise ValueError("threads must be at least 1")
        if self.rate_limit_per_second < 0 or self.rate_limit_burst < 1:
            raise ValueError("rate_limit_per_second must be >= 0 and rate_limit_burst >= 1")
        if not 0 <= self.key_cache_seconds < float("inf"):
            raise ValueError("key_cache_seconds must be a finite number, zero or more")
        if self.ready_max_lag_events < 0:
            raise ValueError("ready_max_lag_events must be zero or more")
