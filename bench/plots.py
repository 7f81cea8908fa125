"""The plots in docs/performance.md, written by the bench run (PNG via matplotlib, Agg):
ratios against their targets, latency percentiles of the HTTP runs, RSS per role at the two
ledger sizes. The figure modules record into `LATENCIES` and `RSS` as they measure."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from bench.load import Result

LATENCIES: list[tuple[str, float, float]] = []  # (label, p50 ms, p99 ms)
RSS: dict[str, dict[str, float]] = {}  # ledger size label -> role -> MB


class Row(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def ratio(self) -> float: ...
    @property
    def target(self) -> float | None: ...


def record_latency(label: str, result: Result) -> None:
    LATENCIES.append((label, result.p50_ms, result.p99_ms))


def write(figures: Sequence[Row], out: Path) -> str:
    """Write the PNGs into `out` and return the Markdown that embeds them (paths relative to
    docs/)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    parts = []

    targeted = [f for f in figures if f.target is not None]
    if targeted:
        fig, ax = plt.subplots(figsize=(9, 0.45 * len(targeted) + 1.2))
        names = [_short(f.name) for f in targeted]
        ys = range(len(targeted))
        colours = ["tab:green" if f.ratio >= (f.target or 0) else "tab:red" for f in targeted]
        ax.barh(ys, [f.ratio for f in targeted], color=colours)
        ax.scatter(
            [f.target or 0.0 for f in targeted],
            list(ys),
            marker="|",
            s=300,
            color="black",
            zorder=3,
        )
        ax.set_yticks(list(ys), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("ratio to baseline (black mark: target)")
        ax.set_title("Figures against their baselines")
        fig.tight_layout()
        fig.savefig(out / "ratios.png", dpi=100)
        plt.close(fig)
        parts.append(f"![ratios against targets]({out.name}/ratios.png)")

    if LATENCIES:
        fig, ax = plt.subplots(figsize=(9, 0.45 * len(LATENCIES) + 1.2))
        ys = range(len(LATENCIES))
        ax.barh(ys, [p99 for _, _, p99 in LATENCIES], color="tab:orange", label="p99")
        ax.barh(ys, [p50 for _, p50, _ in LATENCIES], color="tab:blue", label="p50")
        ax.set_yticks(list(ys), [label for label, _, _ in LATENCIES], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("latency (ms)")
        ax.legend()
        ax.set_title("HTTP latency percentiles, 32 clients")
        fig.tight_layout()
        fig.savefig(out / "latency.png", dpi=100)
        plt.close(fig)
        parts.append(f"![latency percentiles]({out.name}/latency.png)")

    if RSS:
        sizes = list(RSS)
        roles = sorted({role for per in RSS.values() for role in per})
        fig, ax = plt.subplots(figsize=(7, 3.5))
        width = 0.8 / len(sizes)
        for k, size in enumerate(sizes):
            xs = [i + k * width for i in range(len(roles))]
            ax.bar(xs, [RSS[size].get(r, 0.0) for r in roles], width, label=f"{size} events")
        ax.set_xticks([i + width * (len(sizes) - 1) / 2 for i in range(len(roles))], roles)
        ax.set_ylabel("RSS (MB)")
        ax.legend()
        ax.set_title("RSS per role at two ledger sizes")
        fig.tight_layout()
        fig.savefig(out / "rss.png", dpi=100)
        plt.close(fig)
        parts.append(f"![RSS per role]({out.name}/rss.png)")
    return "\n\n".join(parts)


def _short(name: str) -> str:
    name = name.split(" (")[0]
    return name if len(name) <= 60 else name[:57] + "..."
