"""Prometheus metrics computed from the read models at scrape time (prometheus-client).

`LedgerCollector` answers from the projections, so every process (and a restarted one) reports
the same numbers; process metrics (CPU, RSS, file descriptors) come from prometheus-client's
own collectors. `StatusDocsCollector` is this process's own: the status reads answered from
its copy of the view in memory (`projections.doc_cache`). `render(registry)` gives the text
exposition format for `GET /metrics`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from ledger.job import JobState
from projections.attempt_outcomes import outcome_counts
from projections.delivery_queue import delivery_counts
from projections.doc_cache import DocCache
from projections.endpoint_health import health_states
from projections.runner import tracked_position
from projections.stuck import StuckThresholds, stuck_report
from storage.sql import SqlStore, parse_utc_text

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class LedgerCollector(Collector):
    def __init__(
        self,
        store: SqlStore,
        log_head: Callable[[], int],
        projection_names: list[str],
        thresholds: StuckThresholds,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        wall_now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.log_head = log_head
        self.projection_names = projection_names
        self.thresholds = thresholds
        self.now = now  # the ledger's clock: job times are on it
        # The runners stamp `projection_tracking.updated_at` with the system clock, so the lag
        # in seconds is measured on that clock too (they differ only under a test clock).
        self.wall_now = wall_now

    def collect(self) -> Iterator[Metric]:
        now = self.now()
        with self.store.transaction() as tx:
            report = stuck_report(
                tx, tenant_id=None, now=now, thresholds=self.thresholds, limit=10_000
            )
            outcomes = outcome_counts(tx)
            deliveries = delivery_counts(tx)
            health = health_states(tx, now=now)
            streaks = tx.execute(
                "SELECT endpoint_id, consecutive_failures FROM endpoint_health "
                "WHERE endpoint_state = 'active'"
            ).fetchall()
        jobs = GaugeMetricFamily("ledger_jobs", "Jobs by state.", labels=["state"])
        for state in JobState:
            jobs.add_metric([str(state)], report["counts_by_state"].get(str(state), 0))
        yield jobs
        yield GaugeMetricFamily(
            "ledger_oldest_queued_age_seconds",
            "Age of the oldest job still queued (0 when none).",
            value=report["oldest_queued_age_seconds"] or 0.0,
        )
        stuck = GaugeMetricFamily("ledger_stuck_jobs", "Jobs over a threshold.", labels=["reason"])
        by_reason: dict[str, int] = {}
        for row in report["stuck"]:
            by_reason[row["reason"]] = by_reason.get(row["reason"], 0) + 1
        for reason in ("queued_too_long", "not_started", "lease_expired", "retrying_too_often"):
            stuck.add_metric([reason], by_reason.get(reason, 0))
        yield stuck
        attempts = CounterMetricFamily(
            "ledger_attempt_outcomes",
            "Publish attempt outcomes by class and error code.",
            labels=["outcome", "error_code"],
        )
        for outcome, code, n in outcomes:
            attempts.add_metric([outcome, code], n)
        yield attempts
        by_state = GaugeMetricFamily(
            "ledger_webhook_deliveries",
            "Webhook deliveries by endpoint and state (dead_lettered: kept for retry).",
            labels=["endpoint_id", "state"],
        )
        for endpoint_id, delivery_state, n in deliveries:
            by_state.add_metric([endpoint_id, delivery_state], n)
        yield by_state
        endpoints = GaugeMetricFamily(
            "ledger_webhook_endpoints", "Webhook endpoints by health state.", labels=["health"]
        )
        for health_state, n in health.items():
            endpoints.add_metric([health_state], n)
        yield endpoints
        failing = GaugeMetricFamily(
            "ledger_webhook_endpoint_consecutive_failures",
            "Failed delivery attempts in a row, per active endpoint.",
            labels=["endpoint_id"],
        )
        for endpoint_id, streak in streaks:
            failing.add_metric([str(endpoint_id)], int(streak))
        yield failing
        head = self.log_head()
        wall = self.wall_now()
        lag_events = GaugeMetricFamily(
            "ledger_projection_lag_events", "Log entries not yet applied.", labels=["projection"]
        )
        lag_seconds = GaugeMetricFamily(
            "ledger_projection_lag_seconds",
            "Seconds since the projection last advanced, while it is behind (0 when caught up).",
            labels=["projection"],
        )
        for name in self.projection_names:
            position, updated = tracked_position(self.store, name)
            behind = max(head - position, 0)
            lag_events.add_metric([name], behind)
            at = parse_utc_text(updated)
            lag_seconds.add_metric(
                [name], (wall - at).total_seconds() if behind and at is not None else 0.0
            )
        yield lag_events
        yield lag_seconds


class StatusDocsCollector(Collector):
    """This process's status reads on the event loop, by where they were answered from, and
    the documents it keeps."""

    def __init__(self, docs: DocCache) -> None:
        self.docs = docs

    def collect(self) -> Iterator[Metric]:
        reads = CounterMetricFamily(
            "ledger_status_reads",
            "GET /v1/jobs/{id} reads on this process's event loop, by where they were answered "
            "from (database: not in memory here; a read-your-writes wait goes elsewhere).",
            labels=["source"],
        )
        reads.add_metric(["memory"], self.docs.hits)
        reads.add_metric(["database"], self.docs.misses)
        yield reads
        yield GaugeMetricFamily(
            "ledger_status_docs_kept",
            "Job status documents this process keeps in memory.",
            value=len(self.docs),
        )


def registry_for(collector: LedgerCollector, *more: Collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    for one in (collector, *more):
        registry.register(one)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
