"""`create_app(...)`: the Starlette application. Built by a factory, nothing at import time."""

from __future__ import annotations

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ledger.application import JobLedger
from ledger.errors import StoreUnavailable


def create_app(ledger: JobLedger) -> Starlette:
    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        try:
            await anyio.to_thread.run_sync(ledger.recorder.max_notification_id)
        except Exception:
            return JSONResponse(
                {"status": "unavailable", "detail": StoreUnavailable().message},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        return JSONResponse({"status": "ready"})

    return Starlette(routes=[Route("/healthz", healthz), Route("/readyz", readyz)])
