"""The delivery role, wired: settings -> `SenderConfig`, the lease table, and the sender's
asyncio loop in the role's thread. Used by `ledger serve --role delivery|all`.

The sender finds due work in the `delivery_queue` view, so a process running this role also
runs the read models (`jobledger.read_models`); their delivery-queue runner wakes the sender as
soon as the view leaves pending a delivery it could take (a thread-safe hand-off to the
sender's loop), with a slow fallback poll for views moved by another process (on PostgreSQL
one runner per projection is elected). When this process runs the webhook fan-out, the
deliveries it makes are also offered to the sender straight away (`Sender.offer`), ahead of
the queue.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable

import httpx

from delivery.claims import prepare_tables
from delivery.sender import Sender, SenderConfig
from jobledger.bootstrap import Service
from jobledger.read_models import ReadModels
from projections.delivery_fanout import DeliveryFanout
from projections.delivery_queue import DeliveryQueueProjection
from storage.sql import SqlStore


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where it is installed (every platform but Windows): the sender's loop
    does about a third of the process's work per webhook (aiohttp, tasks, thread hand-offs)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


log = logging.getLogger("jobledger")

QUEUE_RUNNER = "delivery_queue"
FANOUT_RUNNER = "delivery_fanout"


def sender_config(service: Service, **overrides: object) -> SenderConfig:
    """The sender's configuration from the service's settings (`overrides` for tests)."""
    settings = service.settings
    webhooks = settings.webhooks
    owner = f"delivery:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    fields: dict[str, object] = {
        "owner": owner,
        "retry_schedule": tuple(webhooks.retry_schedule),
        "timeout_seconds": webhooks.timeout_seconds,
        "concurrency": webhooks.concurrency,
        "endpoint_concurrency": webhooks.endpoint_concurrency,
        "allow_private_targets": webhooks.private_targets_allowed(service.database),
        "disable_after_seconds": webhooks.disable_after_seconds,
        "disable_after_dead_letters": webhooks.disable_after_dead_letters,
        "ledger_threads": max(2, min(webhooks.concurrency, settings.api_threads)),
    }
    fields.update(overrides)
    return SenderConfig(**fields)  # type: ignore[arg-type]


def make_sender(
    service: Service,
    store: SqlStore,
    *,
    client: httpx.AsyncClient | None = None,
    **overrides: object,
) -> Sender:
    """A sender over the service's ledger (the lease table is created if missing). The API
    process can make one in its lifespan for `Sender.deliver_now`."""
    prepare_tables(store)
    return Sender(service.ledger, store, sender_config(service, **overrides), client=client)


class DeliveryRole:
    """The sender over the process's shared read models (`ReadModels`, started by the caller)."""

    def __init__(
        self,
        service: Service,
        read_models: ReadModels,
        *,
        client: httpx.AsyncClient | None = None,
        **overrides: object,
    ) -> None:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per webhook request
        self.store = SqlStore(service.database, max_connections=4)
        try:
            self.sender = make_sender(service, self.store, client=client, **overrides)
        except BaseException:
            self.store.close()
            raise
        self.read_models = read_models
        queue = read_models.runners[QUEUE_RUNNER].projection
        fanout = read_models.runners[FANOUT_RUNNER].projection
        assert isinstance(queue, DeliveryQueueProjection)
        assert isinstance(fanout, DeliveryFanout)
        self._queue, self._fanout = queue, fanout
        read_models.runners[QUEUE_RUNNER].position_changed.append(self._queue_moved)
        fanout.made.append(self.sender.offer)

    def _queue_moved(self, position: int) -> None:
        """Wake the sender when the queue view's batch left a delivery pending that a pass
        could take: not for the ones it took from the fan-out as they were made, nor for
        rows that left the pending state (an empty pass per batch cost about 4 % of the
        process's CPU at 100 jobs/s)."""
        if self.sender.has_news(self._queue.pending):
            self.sender.wake(position)

    def wake(self, position: int = 0) -> None:
        self.sender.wake(position)

    def run(self, stop: threading.Event) -> None:
        """Run the sender's loop in this thread until `stop` is set; in-flight sends finish
        (or are cut short after the drain period: their leases are released)."""
        try:
            with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
                runner.run(self.sender.run(stop))
        finally:
            self.close()

    def close(self) -> None:
        callbacks = self.read_models.runners[QUEUE_RUNNER].position_changed
        if self._queue_moved in callbacks:
            callbacks.remove(self._queue_moved)
        if self.sender.offer in self._fanout.made:
            self._fanout.made.remove(self.sender.offer)
        self.store.close()
