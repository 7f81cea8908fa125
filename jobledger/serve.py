"""`ledger serve`: run the chosen roles of the service in this process."""

from __future__ import annotations

import logging
import signal
import threading

import uvicorn
from starlette.applications import Starlette

from api.app import create_app
from api.reads import ProjectionJobReads
from api.webhook_reads import WebhookReads
from jobledger.bootstrap import Service, api_config, build
from jobledger.delivery_role import DeliveryRole, make_sender
from jobledger.read_models import ReadModels
from jobledger.settings import Settings
from jobledger.worker_role import WorkerRole
from ledger.application import JobLedger
from ledger.errors import LedgerError

log = logging.getLogger("jobledger")


def checkpoint_loop(ledger: JobLedger, interval: float, stop: threading.Event) -> None:
    """Keep the audit log digest checkpointed so that truncation is detectable."""
    while not stop.wait(interval):
        try:
            ledger.write_checkpoint()
        except LedgerError as error:
            log.warning("audit checkpoint skipped: %s", error.message)


def _after_uvicorn_shutdown(signum: int, frame: object) -> None:
    log.info("stopped on signal %s", signal.Signals(signum).name)


def serve(settings: Settings, *, host: str | None, port: int | None, role: str) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    service = build(settings)
    stop = threading.Event()
    checkpointer = None
    if settings.audit_checkpoint_seconds > 0:
        checkpointer = threading.Thread(
            target=checkpoint_loop,
            args=(service.ledger, settings.audit_checkpoint_seconds, stop),
            name="audit-checkpoint",
            daemon=True,
        )
        checkpointer.start()
    read_models = ReadModels(service)
    read_models.start()
    log.info("ledger %s on %s", role, service.database.redacted_url())
    try:
        if role == "worker":
            return _serve_worker(service, read_models)
        if role == "projector":
            return _serve_until_signal()
        if role == "delivery":
            return _serve_delivery(service, read_models)
        worker_stop = threading.Event()
        worker_thread = delivery_thread = None
        if role == "all":
            worker_thread = _start_worker(service, read_models, worker_stop)
            delivery_thread = _start_delivery(service, read_models, worker_stop)
        # uvicorn shuts down gracefully on SIGINT/SIGTERM and then re-raises the signal to the
        # handler that was installed before it; with these no-op handlers that re-raise returns
        # here, so the clean-up below runs and the exit code is 0.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _after_uvicorn_shutdown)
        try:
            uvicorn.run(
                build_app(service, read_models),
                host=host or settings.host,
                port=settings.port if port is None else port,
                log_level="info",
            )
        finally:
            worker_stop.set()
            if worker_thread is not None:  # let in-flight attempts finish or be released
                worker_thread.join(timeout=settings.worker_shutdown_grace_seconds + 10)
            if delivery_thread is not None:  # in-flight sends finish or are cut short
                delivery_thread.join(timeout=settings.webhooks.timeout_seconds + 40)
        return 0
    finally:
        stop.set()
        if checkpointer is not None:
            checkpointer.join(timeout=5)
        read_models.close()
        service.close()


def build_app(service: Service, read_models: ReadModels) -> Starlette:
    """The HTTP app over this process's read models (status and lists come from projections)."""
    reads = ProjectionJobReads(service.ledger, read_models.store, read_models.waiter)
    webhook_reads = WebhookReads(service.ledger, read_models.store)
    for name, waiter in webhook_reads.waiters.items():  # read-your-writes wakes at once
        read_models.runners[name].position_changed.append(waiter.advanced)
    return create_app(
        service.ledger,
        api_config(service.settings),
        reads,
        webhook_reads=webhook_reads,
        # sends `POST /v1/endpoints/{id}/test` at once; its client lives on the app's loop
        webhook_tester=make_sender(service, read_models.store),
    )


def _start_worker(
    service: Service, read_models: ReadModels, stop: threading.Event
) -> threading.Thread:
    """The worker beside the API (role `all`): stopped after uvicorn's graceful shutdown."""
    role = WorkerRole(service, read_models)
    thread = threading.Thread(target=role.run, args=(stop,), name="worker", daemon=True)
    thread.start()
    return thread


def _start_delivery(
    service: Service, read_models: ReadModels, stop: threading.Event
) -> threading.Thread:
    """The webhook sender beside the API (role `all`): stopped after uvicorn's shutdown."""
    role = DeliveryRole(service, read_models)
    thread = threading.Thread(target=role.run, args=(stop,), name="delivery", daemon=True)
    thread.start()
    return thread


def _serve_delivery(service: Service, read_models: ReadModels) -> int:
    """Role `delivery`: the webhook sender's loop in this thread until SIGTERM/SIGINT, then
    drain; exit 0."""
    DeliveryRole(service, read_models).run(_stop_on_signal())
    return 0


def _stop_on_signal() -> threading.Event:
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        log.info("stopped on signal %s", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    return stop


def _serve_worker(service: Service, read_models: ReadModels) -> int:
    """Role `worker`: the claim loop in this thread until SIGTERM/SIGINT, then drain; exit 0."""
    WorkerRole(service, read_models).run(_stop_on_signal())
    return 0


def _serve_until_signal() -> int:
    """Role `projector`: only the read models (already following the log) until a signal."""
    stop = _stop_on_signal()
    while not stop.wait(1.0):
        pass
    return 0
