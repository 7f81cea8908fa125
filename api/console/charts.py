"""Server-rendered inline SVG charts for the console: small, labelled, no JavaScript.

Each chart has a `<title>` and `<desc>` (read by screen readers, referenced by aria-labelledby)
and a text legend; colours come from one palette with enough contrast on white. Pure functions
of their data; this module must never read a store or a clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from markupsafe import Markup, escape

STATE_COLOURS = {
    "queued": "#5b6b7f",
    "scheduled": "#1f5fa8",
    "running": "#7a4bb0",
    "failed_retrying": "#b35c00",
    "published": "#1e7a3c",
    "failed_terminal": "#b3261e",
    "canceled": "#444444",
}
P50_COLOUR = "#1f5fa8"
P95_COLOUR = "#b35c00"


def jobs_per_hour(
    series: Sequence[tuple[datetime, dict[str, int]]],
    states: Sequence[str],
    *,
    chart_id: str,
    title: str = "Jobs created per hour, by current state",
    counted: str = "jobs created",
) -> Markup:
    """Stacked bars per hour, one colour per state (jobs created per hour by their current
    state, or with `title`/`counted`, any per-hour counts by state such as jobs in each state
    at the end of each hour)."""
    width, height, left, bottom, top = 720, 220, 40, 30, 10
    plot_h = height - bottom - top
    peak = max([sum(c.values()) for _, c in series] + [1])
    bar_w = (width - left - 10) / max(len(series), 1)
    total = sum(sum(c.values()) for _, c in series)
    parts = [
        f'<svg role="img" aria-labelledby="{chart_id}-t {chart_id}-d" viewBox="0 0 {width} '
        f'{height}" width="100%" class="chart">',
        f'<title id="{chart_id}-t">{escape(title)}</title>',
        f'<desc id="{chart_id}-d">{total} {escape(counted)} over the last {len(series)} '
        f"hours; the highest hour had {peak if total else 0}.</desc>",
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 10}" y2="{top + plot_h}" '
        'stroke="#333" />',
        f'<text x="{left - 6}" y="{top + 10}" text-anchor="end" font-size="11" '
        f'fill="#222">{peak}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end" font-size="11" '
        'fill="#222">0</text>',
    ]
    for i, (hour, counts) in enumerate(series):
        x = left + i * bar_w
        y = float(top + plot_h)
        for state in states:
            n = counts.get(state, 0)
            if not n:
                continue
            h = plot_h * n / peak
            y -= h
            parts.append(
                f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(bar_w - 2, 1):.1f}" '
                f'height="{h:.1f}" fill="{STATE_COLOURS.get(state, "#666")}">'
                f"<title>{hour:%H}:00 {escape(state)}: {n}</title></rect>"
            )
        if (len(series) - 1 - i) % 3 == 0:  # the latest hour is always labelled
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{height - 12}" text-anchor="middle" '
                f'font-size="11" fill="#222">{hour:%H}:00</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every value above is a number or escaped


def latency_by_endpoint(
    rows: Sequence[tuple[str, float | None, float | None]], *, chart_id: str
) -> Markup:
    """Horizontal bars: p50 and p95 delivery latency (ms) per endpoint."""
    row_h, left, width = 34, 220, 720
    height = max(len(rows), 1) * row_h + 30
    peak = max([v for _, a, b in rows for v in (a, b) if v is not None] + [1.0])
    parts = [
        f'<svg role="img" aria-labelledby="{chart_id}-t {chart_id}-d" viewBox="0 0 {width} '
        f'{height}" width="100%" class="chart">',
        f'<title id="{chart_id}-t">Delivery latency per endpoint (ms)</title>',
        f'<desc id="{chart_id}-d">Median (p50) and 95th percentile (p95) latency of webhook '
        f"delivery attempts for {len(rows)} endpoints over the health window.</desc>",
    ]
    plot_w = width - left - 80
    for i, (label, p50, p95) in enumerate(rows):
        y = 10 + i * row_h
        parts.append(
            f'<text x="{left - 8}" y="{y + 18}" text-anchor="end" font-size="12" '
            f'fill="#222">{escape(label[:32])}</text>'
        )
        for j, (name, value, colour) in enumerate(
            (("p50", p50, P50_COLOUR), ("p95", p95, P95_COLOUR))
        ):
            by = y + j * 13
            if value is None:
                parts.append(
                    f'<text x="{left}" y="{by + 10}" font-size="11" fill="#222">'
                    f"{name}: no attempts</text>"
                )
                continue
            w = max(plot_w * value / peak, 1)
            parts.append(
                f'<rect x="{left}" y="{by}" width="{w:.1f}" height="11" fill="{colour}">'
                f"<title>{name} {value:.0f} ms</title></rect>"
                f'<text x="{left + w + 4:.1f}" y="{by + 10}" font-size="11" fill="#222">'
                f"{name} {value:.0f} ms</text>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every value above is a number or escaped
