"""The ledger's error tree.

Every error a caller of the ledger can meet derives from `LedgerError`. The docstring of each
class is its default message; the API maps each class to one HTTP status in one place
(`api/problems.py`). `store_errors()` turns an unreachable store into `StoreUnavailable`
wherever the store is read or written. Imports only the standard library and eventsourcing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from eventsourcing.persistence import InterfaceError, OperationalError


class LedgerError(Exception):
    """The ledger refused the request."""

    def __init__(self, message: str | None = None, **context: Any) -> None:
        self.message = message or (type(self).__doc__ or type(self).__name__).strip()
        self.context = context
        super().__init__(self.message)


class JobNotFound(LedgerError):
    """No such job."""

    def __init__(self, job_id: object) -> None:
        super().__init__(f"No job with id {job_id}.", job_id=str(job_id))


class InvalidTransition(LedgerError):
    """This transition is not allowed from the job's current state."""

    def __init__(
        self, command: str, state: str, allowed_from: tuple[str, ...], *, subject: str = "a job"
    ) -> None:
        self.command = command
        self.state = state
        self.allowed_from = allowed_from
        froms = ", ".join(allowed_from) or "no state"
        super().__init__(
            f"Cannot {command} {subject} that is {state}; {command} is allowed from: {froms}.",
            command=command,
            state=state,
            allowed_from=list(allowed_from),
        )


class LeaseNotExpired(LedgerError):
    """The running attempt's lease has not expired yet."""


class WrongAttempt(LedgerError):
    """The outcome reported is for an attempt that is not the job's current one."""


class IdempotencyConflict(LedgerError):
    """This Idempotency-Key was already used with a different request body."""

    def __init__(self, job_id: object, idempotency_key: str) -> None:
        super().__init__(
            f"Idempotency-Key {idempotency_key!r} was already used with a different request "
            f"body (job {job_id}). Use a new key for a different job.",
            job_id=str(job_id),
            idempotency_key=idempotency_key,
        )


class ConcurrentUpdate(LedgerError):
    """The job kept changing while this command was applied; nothing was written. Try again."""


class InvalidJob(LedgerError):
    """The job request is invalid."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}", field=field)


class StoreUnavailable(LedgerError):
    """The event store cannot be reached right now; nothing was written. Retry later."""


class NotDue(LedgerError):
    """The job is not due to run yet."""


class TenantNotFound(LedgerError):
    """No such tenant."""

    def __init__(self, tenant_id: object) -> None:
        super().__init__(f"No tenant with id {tenant_id}.", tenant_id=str(tenant_id))


class KeyNotFound(LedgerError):
    """No such API key."""

    def __init__(self, key_id: object) -> None:
        super().__init__(f"No API key with id {key_id}.", key_id=str(key_id))


class InvalidTenancy(LedgerError):
    """The tenant or key request is invalid."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}", field=field)


class EndpointNotFound(LedgerError):
    """No such webhook endpoint."""

    def __init__(self, endpoint_id: object) -> None:
        super().__init__(f"No endpoint with id {endpoint_id}.", endpoint_id=str(endpoint_id))


class DeliveryNotFound(LedgerError):
    """No such webhook delivery."""

    def __init__(self, delivery_id: object) -> None:
        super().__init__(f"No delivery with id {delivery_id}.", delivery_id=str(delivery_id))


class InvalidEndpoint(LedgerError):
    """The endpoint request is invalid."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}", field=field)


class WebhooksNotConfigured(LedgerError):
    """Webhook secrets cannot be sealed: the service has no secret key configured."""


@contextmanager
def store_errors() -> Iterator[None]:
    """Turns the store being unreachable into `StoreUnavailable` at the ledger's boundary.

    IntegrityError (a concurrency or idempotency signal) passes through untouched.
    """
    try:
        yield
    except (InterfaceError, OperationalError) as error:
        raise StoreUnavailable() from error
