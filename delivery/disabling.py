"""When an endpoint that keeps failing is disabled automatically (SPEC section 6).

Two rules, either one disables (the defaults are in `jobledger.webhook_settings`):
- every attempt to the endpoint has failed for `after_seconds` (default 5 days): the failure
  streak began (`failing_since`) that long ago and no attempt has succeeded since;
- `after_dead_letters` deliveries in a row were dead-lettered (0 turns this rule off).

The streak comes from the `endpoint_health` view (`read_streak`, plain SQL: this package does
not import the projections package). The view lags the ledger: when it has not applied the
attempt the sender has just recorded, `including` adds that attempt, so the decision never
waits for the view. `disable_reason` is pure: the clock reading is an argument.

What it must never do: write to the ledger (the sender does, with `disable_endpoint`), or count
`webhook.test` attempts (the view already leaves them out; the sender does not ask for them).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from ledger.clock import iso_z
from storage.sql import SqlStore, parse_utc_text

HEALTH_TABLE = "endpoint_health"


@dataclass(frozen=True)
class Streak:
    """An endpoint's current failure streak, as the `endpoint_health` view says it."""

    endpoint_state: str
    consecutive_failures: int
    failing_since: datetime | None
    consecutive_dead_letters: int
    position: int  # the last log position the view applied for this endpoint

    def including(self, *, position: int, attempted_at: datetime, dead_lettered: bool) -> Streak:
        """The streak with one more failed attempt (recorded at log `position`), unless the
        view already applied it."""
        if self.position >= position:
            return self
        return replace(
            self,
            consecutive_failures=self.consecutive_failures + 1,
            failing_since=self.failing_since or attempted_at,
            consecutive_dead_letters=self.consecutive_dead_letters + (1 if dead_lettered else 0),
            position=position,
        )


def read_streak(store: SqlStore, endpoint_id: str, *, table: str = HEALTH_TABLE) -> Streak | None:
    """The endpoint's streak, or None when the view has no row for it."""
    with store.transaction() as tx:
        row = tx.execute(
            "SELECT endpoint_state, consecutive_failures, failing_since, "
            f"consecutive_dead_letters, position FROM {table} WHERE endpoint_id = ?",
            (endpoint_id,),
        ).fetchone()
    if row is None:
        return None
    return Streak(
        endpoint_state=str(row[0]),
        consecutive_failures=int(row[1]),
        failing_since=parse_utc_text(str(row[2])) if row[2] else None,
        consecutive_dead_letters=int(row[3]),
        position=int(row[4]),
    )


def disable_reason(
    streak: Streak, now: datetime, *, after_seconds: float, after_dead_letters: int
) -> str | None:
    """Why the endpoint should be disabled now, or None when it should not."""
    if streak.consecutive_failures > 0 and streak.failing_since is not None and after_seconds > 0:
        failing_for = (now - streak.failing_since).total_seconds()
        if failing_for >= after_seconds:
            return (
                f"every delivery attempt failed for {_duration(failing_for)} "
                f"(since {iso_z(streak.failing_since)}; the limit is {_duration(after_seconds)})"
            )
    if 0 < after_dead_letters <= streak.consecutive_dead_letters:
        return (
            f"{streak.consecutive_dead_letters} deliveries in a row were dead-lettered "
            f"(the limit is {after_dead_letters})"
        )
    return None


def _duration(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds:.0f} seconds"
