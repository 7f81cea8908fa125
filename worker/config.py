"""`WorkerConfig`: what the worker needs to know, made by the composition root from settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerConfig:
    worker_id: str  # also the actor of every event the worker writes; starts with "worker:"
    concurrency: int = 4  # attempts in flight at once (one thread each)
    lease_seconds: float = 120.0  # an attempt not reported by then is `worker_lost`
    poll_seconds: float = 1.0  # fallback poll; wake-ups normally come from the projection
    shutdown_grace_seconds: float = 20.0  # SIGTERM: how long in-flight attempts may finish
    batch_size: int = 100  # queued jobs scheduled / expired leases reaped per pass

    def __post_init__(self) -> None:
        if not self.worker_id.startswith("worker:"):
            raise ValueError("worker_id must start with 'worker:'")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.lease_seconds <= 0:
            raise ValueError("lease_seconds must be more than zero")
