"""`ledger serve`: run the chosen roles of the service in this process."""

from __future__ import annotations

import logging
import threading

import uvicorn

from api.app import create_app
from jobledger.bootstrap import build
from jobledger.settings import Settings
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
    log.info("ledger %s on %s", role, service.database.redacted_url())
    try:
        uvicorn.run(
            create_app(service.ledger),
            host=host or settings.host,
            port=settings.port if port is None else port,
            log_level="info",
        )
    finally:
        stop.set()
        if checkpointer is not None:
            checkpointer.join(timeout=5)
        service.close()
    return 0
