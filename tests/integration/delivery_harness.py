"""`DeliveryEnv`: the real service on one store, its read models following the log in threads,
and the delivery role's sender running its loop in a thread, as `ledger serve` wires them.
Every wait is bounded (`wait_until`)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

from delivery.crypto import generate_key
from delivery.sender import SentAttempt
from jobledger.bootstrap import Service, build
from jobledger.delivery_role import DeliveryRole, make_sender
from jobledger.read_models import ReadModels
from jobledger.settings import Settings
from jobledger.webhook_settings import WebhookSettings
from ledger.clock import Clock
from ledger.delivery import Delivery
from ledger.endpoint import EndpointSettings
from ledger.webhooks import RegisteredEndpoint
from tests.conftest import make_new_job

# Fast retries for tests: the schedule's floor after a timeout / 429 is 30 s in production.
TEST_SENDER = {
    "poll_seconds": 0.2,
    "drain_seconds": 1.0,
    "slow_floor_seconds": 0.05,
    "endpoint_cache_seconds": 0.1,
}


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.02)


class DeliveryEnv:
    def __init__(
        self,
        database_url: str,
        *,
        clock: Clock | None = None,
        webhooks: dict[str, Any] | None = None,
        sender: dict[str, Any] | None = None,
    ) -> None:
        options: dict[str, Any] = {
            "secret_key": generate_key(),
            "allow_private_targets": True,
            "timeout_seconds": 2.0,
            **(webhooks or {}),
        }
        self.settings = Settings(database_url=database_url, webhooks=WebhookSettings(**options))
        self.service: Service = build(self.settings, clock=clock)
        self.ledger = self.service.ledger
        self.read_models = ReadModels(self.service)
        self.read_models.start()
        self.role = DeliveryRole(
            self.service, self.read_models, **{**TEST_SENDER, **(sender or {})}
        )
        self.sender = self.role.sender
        self.sent: list[SentAttempt] = []
        self._sent_lock = threading.Lock()
        self.sender.attempt_finished.append(self._record)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.role.run, args=(self._stop,), daemon=True)
        self._thread.start()
        self.tenant_id = str(self.ledger.create_tenant("tenant", actor="admin:test").tenant.id)

    def _record(self, sent: SentAttempt) -> None:
        with self._sent_lock:
            self.sent.append(sent)

    def attempts_sent(self, delivery_id: UUID | None = None) -> list[SentAttempt]:
        with self._sent_lock:
            return [s for s in self.sent if delivery_id is None or s.delivery_id == delivery_id]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)
        assert not self._thread.is_alive(), "the delivery role did not stop"
        self.read_models.close()
        self.service.close()

    def queue_only(self) -> None:
        """The sender takes work from the delivery queue alone, not the deliveries this
        process's fan-out offers it as it makes them (tests of the queue's path)."""
        self.read_models.runners["delivery_fanout"].projection.made.remove(self.sender.offer)

    # -- making things --

    def endpoint(
        self, url: str, *, tenant_id: str | None = None, **fields: Any
    ) -> RegisteredEndpoint:
        settings = EndpointSettings(
            url=url, event_types=fields.pop("event_types", ("*",)), **fields
        )
        return self.ledger.register_endpoint(
            tenant_id or self.tenant_id, settings, actor="key:test"
        )

    def job(self, key: str, *, tenant_id: str | None = None) -> UUID:
        created = self.ledger.create_job(
            make_new_job(),
            tenant_id=tenant_id or self.tenant_id,
            idempotency_key=key,
            actor="key:t",
        )
        return created.job.id

    # -- reading --

    def deliveries(self, endpoint_id: UUID) -> list[Delivery]:
        """The endpoint's deliveries (from the queue view's ids, loaded from the ledger)."""
        with self.read_models.store.transaction() as tx:
            rows = tx.execute(
                "SELECT delivery_id FROM delivery_queue WHERE endpoint_id = ? "
                "ORDER BY created_position",
                (str(endpoint_id),),
            ).fetchall()
        return [self.ledger.get_delivery(UUID(str(r[0])), tenant_id=None) for r in rows]

    def one_delivery(self, endpoint_id: UUID, event_type: str = "job.queued") -> Delivery:
        def found() -> Delivery | None:
            matching = [d for d in self.deliveries(endpoint_id) if d.event_type == event_type]
            return matching[0] if matching else None

        delivery: Delivery = wait_until(found, f"a {event_type} delivery to {endpoint_id}")
        return delivery

    def wait_state(self, delivery_id: UUID, state: str, timeout: float = 10.0) -> Delivery:
        def reached() -> Delivery | None:
            delivery = self.ledger.get_delivery(delivery_id, tenant_id=None)
            return delivery if delivery.state == state else None

        delivery: Delivery = wait_until(reached, f"delivery {delivery_id} {state}", timeout)
        return delivery

    def deliver_now(self, delivery_id: UUID) -> SentAttempt:
        """`Sender.deliver_now` as the API calls it: a sender of its own on its own loop."""
        store = self.read_models.store
        sender = make_sender(self.service, store, **TEST_SENDER)

        async def run() -> SentAttempt:
            try:
                return await sender.deliver_now(delivery_id)
            finally:
                await sender.aclose()

        return asyncio.run(run())
