"""`ledger projections rebuild [NAME]` and `ledger projections status`."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from jobledger.bootstrap import build
from jobledger.settings import Settings
from projections.registry import PROJECTIONS, live, shadow, tracked_names
from projections.runner import ProjectionRunner, rebuild, tracked_position
from storage.sql import SqlStore, parse_utc_text


def add_commands(commands: Any) -> None:
    group = commands.add_parser("projections", help="read models: status and rebuilds")
    sub = group.add_subparsers()
    status = sub.add_parser("status", help="each projection's position and lag")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=status_command)
    again = sub.add_parser("rebuild", help="rebuild projections from an empty view")
    again.add_argument("name", nargs="?", choices=sorted(PROJECTIONS), help="default: all")
    again.add_argument("--json", action="store_true", help="print the result as JSON")
    again.set_defaults(run=rebuild_command)


class ProgressBar:
    """events done / total, events per second and ETA, redrawn in place on stderr."""

    def __init__(self, name: str, stream: Any = sys.stderr) -> None:
        self.name = name
        self.stream = stream
        self.started = time.monotonic()

    def __call__(self, position: int, target: int) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = position / elapsed  # a rebuild starts at position 0
        share = position / target if target else 1.0
        eta = (target - position) / rate if rate > 0 else 0.0
        filled = int(share * 30)
        self.stream.write(
            f"\r{self.name:<12} [{'#' * filled}{'.' * (30 - filled)}] {position:,}/{target:,} "
            f"({share:.0%}) {rate:,.0f} ev/s ETA {eta:,.1f}s"
        )
        self.stream.flush()

    def done(self) -> None:
        self.stream.write("\n")


def rebuild_command(settings: Settings, args: argparse.Namespace) -> int:
    service = build(settings)
    store = SqlStore(service.database)
    results = []
    try:
        for name in [args.name] if args.name else sorted(PROJECTIONS):
            bar = ProgressBar(name)
            started = time.monotonic()
            position = rebuild(
                service.ledger,
                store,
                live(service.ledger, name),
                shadow(service.ledger, name),
                progress=None if args.json else bar,
            )
            if not args.json:
                bar.done()
            seconds = time.monotonic() - started
            results.append({"name": name, "position": position, "seconds": round(seconds, 3)})
    finally:
        store.close()
        service.close()
    if args.json:
        sys.stdout.write(orjson.dumps(results).decode() + "\n")
    else:
        for r in results:
            print(f"{r['name']}: rebuilt up to log position {r['position']} in {r['seconds']} s")
    return 0


def status_command(settings: Settings, args: argparse.Namespace) -> int:
    service = build(settings)
    store = SqlStore(service.database)
    try:
        head = service.ledger.recorder.max_notification_id() or 0
        now = datetime.now(UTC)
        rows = []
        for name in tracked_names():
            if name in PROJECTIONS:  # a fresh database: make the views so they can report
                ProjectionRunner(service.ledger, store, live(service.ledger, name)).setup()
            position, updated = tracked_position(store, name)
            at = parse_utc_text(updated)
            rows.append(
                {
                    "name": name,
                    "position": position,
                    "log_position": head,
                    "lag_events": head - position,
                    "updated_at": at.isoformat() if at else None,
                    "seconds_since_update": round((now - at).total_seconds(), 3) if at else None,
                }
            )
    finally:
        store.close()
        service.close()
    if args.json:
        sys.stdout.write(orjson.dumps(rows).decode() + "\n")
    else:
        for r in rows:
            print(
                f"{r['name']:<16} position {r['position']:>10,} of {r['log_position']:,} "
                f"(lag {r['lag_events']:,} events)"
            )
    return 0
