"""`ApiState`: the shared resources handlers use, made by the app's lifespan.

The ledger is synchronous; every call to it goes through `ApiState.call`, which runs it in a
worker thread under a `CapacityLimiter` sized to the DB pool, so a slow store call never blocks
the event loop, and requests beyond the pool wait for a thread instead of for a connection.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter
from prometheus_client import CollectorRegistry
from starlette.requests import Request

from api.auth import Authenticator, Permission, Principal
from api.config import ApiConfig
from api.console.queries import HourlyCache
from api.creates import JobCreates
from api.reads import JobReads, StatusDocs
from api.targets import TargetCheck
from api.webhook_reads import DeliveryDocs, WebhookReads
from api.webhook_tester import WebhookTester
from ledger.application import JobLedger
from ledger.errors import store_errors
from ledger.tenancy import ApiKey
from storage.sql import SqlStore

T = TypeVar("T")


@dataclass
class ApiState:
    ledger: JobLedger
    reads: JobReads
    config: ApiConfig
    limiter: CapacityLimiter
    authenticator: Authenticator
    # The read models' store (projection rows and positions); None in an app without them.
    views: SqlStore | None = None
    metrics: CollectorRegistry | None = None
    # Webhooks: list reads (None without read models), the URL check, the test sender (or None).
    webhook_reads: WebhookReads | None = None
    targets: TargetCheck | None = None
    webhook_tester: WebhookTester | None = None
    # The status read on the event loop (PostgreSQL read models only; `api.reads.StatusDocs`).
    status_docs: StatusDocs | None = None
    # The delivery list on the event loop, beside it (`api.webhook_reads.DeliveryDocs`).
    delivery_docs: DeliveryDocs | None = None
    # The console queue page's jobs-per-hour series, read at most every 30 s per scope.
    hourly: HourlyCache = field(default_factory=HourlyCache)
    # Creates saved in rounds, one thread hop per round (`api.creates`).
    creates: JobCreates = field(init=False)

    def __post_init__(self) -> None:
        self.creates = JobCreates(self.ledger, self.call)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await anyio.to_thread.run_sync(
            functools.partial(fn, *args, **kwargs), limiter=self.limiter
        )

    async def authorize(self, request: Request, permission: Permission) -> Principal:
        token = self.authenticator.bearer_token(request)
        principal = self.authenticator.admin(token)
        if principal is None:
            principal = await self.authenticator.key_principal(token, self._authenticate)
        principal.require(permission)
        return principal

    async def _authenticate(self, token: str) -> ApiKey | None:
        return await self.call(self.ledger.authenticate, token)

    async def log_position(self) -> int:
        """The end of the log now: at or after any write this request found already done."""
        return await self.call(self.log_head)

    def log_head(self) -> int:
        """`log_position`, blocking (for code already running in a worker thread)."""
        with store_errors():
            return int(self.ledger.recorder.max_notification_id() or 0)


def api_state(request: Request) -> ApiState:
    state: ApiState = request.state.api
    return state
