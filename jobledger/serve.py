"""`ledger serve`: run the chosen roles of the service in this process (or, for the API with
`--processes N` on PostgreSQL, in N serving processes under uvicorn's supervisor).

The HTTP side (the `api` package, uvicorn) is imported by the functions that serve HTTP, not
here: a `--role worker`, `delivery` or `projector` process never loads it, which saves each
such process about 11 MB of memory and 170 ms of start-up (`import jobledger.serve` took 814
ms and left 76 MB resident, against 646 ms and 65 MB for what those roles need)."""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from jobledger.bootstrap import Service, api_config, build
from jobledger.delivery_role import DeliveryRole, make_sender
from jobledger.read_models import ReadModels
from jobledger.settings import Settings
from jobledger.worker_role import WorkerRole
from ledger.application import JobLedger
from ledger.errors import LedgerError
from storage.breaker import is_unreachable

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


# Hands the role to the serving processes of `--processes N` (they rebuild settings from the
# environment, which the parent's children inherit).
ROLE_VARIABLE = "LEDGER_SERVE_ROLE"


class ServingProcess:
    """What one serving process owns: the service, the audit checkpointer, the read models, the
    HTTP app (roles `all` and `api`), the worker (`all`, `worker`) and the webhook sender
    (`all`, `delivery`). Construction touches the store and is all-or-nothing: on failure
    whatever was opened is closed again (see `start_serving_process`). `close()` stops them
    in order: in-flight work first, then the read models, then the store."""

    def __init__(self, settings: Settings, role: str) -> None:
        self.settings = settings
        self.role = role
        self.stop = threading.Event()
        self.worker_stop = threading.Event()
        self.checkpointer: threading.Thread | None = None
        self.worker: WorkerRole | None = None
        self.delivery: DeliveryRole | None = None
        self.worker_thread: threading.Thread | None = None
        self.delivery_thread: threading.Thread | None = None
        self.http_app: Starlette | None = None
        self.service = build(settings)
        try:
            self.read_models = ReadModels(self.service, keep_status_docs=role in ("all", "api"))
            try:
                self._make_roles()
            except BaseException:
                self._close_roles()
                self.read_models.close()
                raise
        except BaseException:
            self.service.close()
            raise
        self._start()
        log.info("ledger %s on %s", role, self.service.database.redacted_url())

    def _make_roles(self) -> None:
        if self.role in ("all", "worker"):
            self.worker = WorkerRole(self.service, self.read_models)
        if self.role in ("all", "delivery"):
            self.delivery = DeliveryRole(self.service, self.read_models)
        if self.role in ("all", "api"):
            self.http_app = build_app(self.service, self.read_models)

    def _close_roles(self) -> None:
        for role in (self.worker, self.delivery):
            if role is not None:
                role.close()

    def _start(self) -> None:
        if self.settings.audit_checkpoint_seconds > 0:
            self.checkpointer = threading.Thread(
                target=checkpoint_loop,
                args=(self.service.ledger, self.settings.audit_checkpoint_seconds, self.stop),
                name="audit-checkpoint",
                daemon=True,
            )
            self.checkpointer.start()
        self.read_models.start()
        if self.role != "all":  # roles worker and delivery run in the main thread
            return
        # beside the API; stopped after uvicorn's graceful shutdown
        if self.worker is not None:
            self.worker_thread = _in_thread(self.worker.run, self.worker_stop, "worker")
        if self.delivery is not None:
            self.delivery_thread = _in_thread(self.delivery.run, self.worker_stop, "delivery")

    def app(self) -> Starlette:
        assert self.http_app is not None, f"role {self.role} serves no HTTP"
        return self.http_app

    def close(self) -> None:
        self.worker_stop.set()
        if self.worker_thread is not None:  # let in-flight attempts finish or be released
            self.worker_thread.join(timeout=self.settings.worker_shutdown_grace_seconds + 10)
        if self.delivery_thread is not None:  # in-flight sends finish or are cut short
            self.delivery_thread.join(timeout=self.settings.webhooks.timeout_seconds + 40)
        self.stop.set()
        if self.checkpointer is not None:
            self.checkpointer.join(timeout=5)
        self.read_models.close()
        self.service.close()


class StartupFailed(Exception):
    """The store stayed unreachable for all of `LEDGER_STARTUP_WAIT_SECONDS`."""


def start_serving_process(
    settings: Settings, role: str, *, sleep: Callable[[float], object] = time.sleep
) -> ServingProcess:
    """A `ServingProcess`, once the store can be reached. A process started beside (or just
    before) its database, or restarted while the machine is saturated, waits for the store
    with a capped back-off for up to `settings.startup_wait_seconds`, logging each try,
    instead of exiting at once and leaving it to a supervisor. Other errors are not waited
    out. Raises `StartupFailed` when the wait is over."""
    deadline = time.monotonic() + settings.startup_wait_seconds
    delay = STARTUP_FIRST_RETRY_SECONDS
    attempt = 1
    while True:
        try:
            process = ServingProcess(settings, role)
        except Exception as error:
            if not is_unreachable(error):
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                raise StartupFailed(
                    f"the store at {settings.database().redacted_url()} could not be reached "
                    f"within LEDGER_STARTUP_WAIT_SECONDS={settings.startup_wait_seconds:g}: "
                    f"{error}"
                ) from error
            wait = min(delay, left)
            log.warning(
                "start-up try %d: the store is unreachable or busy (%s); trying again in %.1f s",
                attempt,
                root_cause(error),
                wait,
            )
            sleep(wait)
            delay = min(delay * 2, STARTUP_MAX_RETRY_SECONDS)
            attempt += 1
            continue
        # What start-up made (modules, schemas, pools) lives as long as the process: out of
        # the collector's sight, so its full collections walk only what requests make.
        gc.freeze()
        gc.set_threshold(SERVING_GC_THRESHOLD, *gc.get_threshold()[1:])
        return process


def root_cause(error: BaseException) -> str:
    """The innermost error `error` was raised from, as `Type: first line` (what the store said,
    not the ledger's generic StoreUnavailable)."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


# Allocations between young-generation collections in a serving process (Python's default is
# 700). A request, a batch of creates or a view's batch lives across many default collections,
# each walking it again; at 50,000 the API process spent 5-8 % less CPU per create and its p99
# fell from 25 to 19 ms (issue 8, figure 1). Only cyclic garbage waits longer to be freed:
# everything else goes when its last reference does.
SERVING_GC_THRESHOLD = 50_000
STARTUP_FIRST_RETRY_SECONDS = 0.5
STARTUP_MAX_RETRY_SECONDS = 5.0


def serve(settings: Settings, *, host: str | None, port: int | None, role: str) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if settings.processes > 1 and role in ("all", "api"):
        return _serve_processes(settings, host=host, port=port, role=role)
    try:
        process = start_serving_process(settings, role)
    except StartupFailed as error:
        log.error("not started: %s", error)
        return 1
    try:
        if process.worker is not None and role == "worker":
            process.worker.run(_stop_on_signal())  # returns after draining
            return 0
        if process.delivery is not None and role == "delivery":
            process.delivery.run(_stop_on_signal())  # in-flight sends finish first
            return 0
        if role == "projector":
            return _serve_until_signal()
        # uvicorn shuts down gracefully on SIGINT/SIGTERM and then re-raises the signal to the
        # handler that was installed before it; with these no-op handlers that re-raise returns
        # here, so the clean-up below runs and the exit code is 0.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _after_uvicorn_shutdown)
        _run_http(process.app(), settings, host, port)
        return 0
    finally:
        process.close()


def _serve_processes(settings: Settings, *, host: str | None, port: int | None, role: str) -> int:
    """`--processes N`: uvicorn's supervisor binds the port once and runs N serving processes
    on it (each a `ServingProcess` made by `serving_process_app`), restarts any that dies, and
    on SIGTERM/SIGINT stops them all gracefully. PostgreSQL only: the processes share the
    projections through advisory locks and the work queues through SKIP LOCKED claims."""
    if not settings.database().is_postgres:
        log.error("LEDGER_PROCESSES > 1 needs PostgreSQL; SQLite is served by one process")
        return 2
    os.environ[ROLE_VARIABLE] = role
    _run_http(
        "jobledger.serve:serving_process_app",
        settings,
        host,
        port,
        factory=True,
        workers=settings.processes,
    )
    return 0


def _run_http(
    target: Any, settings: Settings, host: str | None, port: int | None, **options: Any
) -> None:
    """uvicorn over `target` (an app, or a factory's import path with `factory=True`), with
    our HTTP protocol (imported here: see the module's docstring)."""
    import uvicorn

    from jobledger.http_protocol import CoalescingHttpToolsProtocol

    uvicorn.run(
        target,
        host=host or settings.host,
        port=settings.port if port is None else port,
        log_level="info",
        access_log=settings.access_log,
        http=CoalescingHttpToolsProtocol,
        **options,
    )


def serving_process_app() -> ASGIApp:
    """One of the N serving processes: its app, whose lifespan's end also closes the process."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        process = start_serving_process(Settings.from_env(), os.environ.get(ROLE_VARIABLE, "all"))
    except StartupFailed as error:
        log.error("not started: %s", error)
        raise SystemExit(1) from None
    return _closing_after_shutdown(process.app(), process.close)


def _closing_after_shutdown(app: ASGIApp, close: Callable[[], None]) -> ASGIApp:
    """`app`, with `close` run (in a thread) once its lifespan has shut down."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return

        async def send_after_close(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await anyio.to_thread.run_sync(close)
            await send(message)

        await app(scope, receive, send_after_close)

    return wrapped


def build_app(service: Service, read_models: ReadModels) -> Starlette:
    """The HTTP app over this process's read models (status and lists come from projections)."""
    from api.app import create_app
    from api.reads import ProjectionJobReads
    from api.webhook_reads import WebhookReads

    reads = ProjectionJobReads(
        service.ledger, read_models.store, read_models.waiter, docs=read_models.status_docs
    )
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


def _in_thread(
    run: Callable[[threading.Event], None], stop: threading.Event, name: str
) -> threading.Thread:
    thread = threading.Thread(target=run, args=(stop,), name=name, daemon=True)
    thread.start()
    return thread


def _stop_on_signal() -> threading.Event:
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        log.info("stopped on signal %s", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    return stop


def _serve_until_signal() -> int:
    """Role `projector`: only the read models (already following the log) until a signal."""
    stop = _stop_on_signal()
    while not stop.wait(1.0):
        pass
    return 0
