"""Where the CPU goes: the whole machine's CPU per operation, ours beside the baseline's.

On this two-core machine every figure with a ratio target runs the machine near full: the
service measured, PostgreSQL, the load generator or receiver and the kernel's loopback
networking share the two cores. When both sides keep the machine busy, the ratio of their
rates is the inverse ratio of their machine CPU per operation, so a target of 0.5x needs our
side to cost at most twice the baseline's CPU per operation, all processes counted. One
Python process does at most one core's work, so our busiest process's CPU per operation caps
our rate as well (`Budget.interpreter_ceiling`). The
figure modules measure both sides with `measure` and record them in `BUDGETS`; the run
prints them as their own table (which process used what, per operation), so a missed target
shows in every run where the time went and how far it is from the budget.

Linux only (/proc), like the rest of the suite.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.support import CLOCK_TICKS, cpu_seconds


@dataclass
class Use:
    """One side of a figure: `operations` done in `seconds`, with the machine's busy CPU
    seconds (all cores) and the CPU seconds of the processes named when measuring."""

    operations: int = 0
    seconds: float = 0.0
    busy: float = 0.0
    parts: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.operations / self.seconds if self.seconds else 0.0

    @property
    def utilisation(self) -> float:
        """Share of the machine's cores busy while measured (1.0: every core)."""
        cores = os.cpu_count() or 1
        return self.busy / (self.seconds * cores) if self.seconds else 0.0

    def per_operation_ms(self, seconds: float) -> float:
        return seconds * 1000 / self.operations if self.operations else 0.0

    def busiest(self) -> tuple[str, float]:
        """(name, share of one core) of the named process that used the most CPU (PostgreSQL
        is many processes and is left out): near 1.0, that process's interpreter bounds the
        rate whatever the machine has left."""
        single = {n: s for n, s in self.parts.items() if n != POSTGRES}
        if not single or not self.seconds:
            return "-", 0.0
        name = max(single, key=lambda n: single[n])
        return name, self.share(name)

    def share(self, name: str) -> float:
        """The share of one core that the process named `name` used (0: not measured)."""
        return self.parts.get(name, 0.0) / self.seconds if self.seconds else 0.0

    def split(self) -> str:
        """'name 0.12, ..., other 0.03' in ms per operation; other: what the named processes
        do not cover (the load generator, the kernel's network work, processes that ended)."""
        named = {name: s for name, s in self.parts.items() if s > 0}
        other = max(self.busy - sum(named.values()), 0.0)
        shown = [f"{name} {self.per_operation_ms(s):.3f}" for name, s in named.items()]
        return ", ".join([*shown, f"other {self.per_operation_ms(other):.3f}"])


@dataclass(frozen=True)
class Budget:
    figure: str
    ours: Use
    baseline_name: str
    baseline: Use
    target: float

    @property
    def ceiling(self) -> float:
        """The ratio the two CPU costs allow when both sides keep the machine busy."""
        ours = self.ours.busy / self.ours.operations if self.ours.operations else 0.0
        base = self.baseline.busy / self.baseline.operations if self.baseline.operations else 0.0
        return base / ours if ours else 0.0

    @property
    def interpreter_ceiling(self) -> float:
        """The ratio our busiest process allows, one interpreter doing at most one core's
        work: 1 / its CPU per operation, against the baseline's rate."""
        name, _ = self.ours.busiest()
        seconds = (
            self.ours.parts.get(name, 0.0) / self.ours.operations if self.ours.operations else 0
        )
        return 1 / seconds / self.baseline.rate if seconds and self.baseline.rate else 0.0

    def allowed(self) -> str:
        """Both ceilings, and what each CPU cost must come down to for the target."""
        name, _ = self.ours.busiest()
        machine = self.baseline.per_operation_ms(self.baseline.busy) / self.target
        one_core = 1000 / (self.target * self.baseline.rate) if self.baseline.rate else 0.0
        return (
            f"machine {self.ceiling:.2f}x, {name} {self.interpreter_ceiling:.2f}x (target "
            f"{self.target}x needs <= {machine:.3f} ms on the machine and <= {one_core:.3f} ms "
            f"in {name})"
        )


BUDGETS: list[Budget] = []
POSTGRES = "postgres"  # the part every measurement has: all of the server's processes


def machine_busy_seconds() -> float:
    """CPU seconds the machine has spent not idle since boot, over all cores (user, nice,
    system, irq, softirq; not idle, iowait or time stolen by the hypervisor)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / CLOCK_TICKS


def postgres_seconds() -> float:
    """CPU seconds of the live PostgreSQL processes (server, backends, writers)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            if (entry / "comm").read_text().strip() == "postgres":
                total += cpu_seconds(int(entry.name))
    return total


def _sample(processes: Mapping[str, int]) -> dict[str, float]:
    sample = {POSTGRES: postgres_seconds()}
    for name, pid in processes.items():
        try:
            sample[name] = cpu_seconds(pid)
        except OSError:  # it has ended: its time is under other
            sample[name] = 0.0
    return sample


@contextlib.contextmanager
def measure(use: Use | None, processes: Mapping[str, int]) -> Iterator[Use]:
    """Add to `use` (None: a new one; the one filled is yielded) the wall time, the machine's
    busy time and that of PostgreSQL and of `processes` (name -> pid, sampled at both ends: a
    process that ends inside the window is counted under other) while the block runs; the
    caller adds to `use.operations`."""
    use = use if use is not None else Use()
    before, busy, t0 = _sample(processes), machine_busy_seconds(), time.perf_counter()
    yield use
    after = _sample(processes)
    use.seconds += time.perf_counter() - t0
    use.busy += machine_busy_seconds() - busy
    for name, seconds in after.items():
        use.parts[name] = use.parts.get(name, 0.0) + seconds - before.get(name, 0.0)


def table(budgets: list[Budget]) -> str:
    rows = [
        "| figure | side | rate /s | machine busy | machine CPU per op (ms) | by process (ms "
        "per op) | busiest process (share of one core) | ratio the CPU costs allow |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for b in budgets:
        sides = (("ours", b.figure, b.ours), ("baseline", b.baseline_name, b.baseline))
        for side, name, use in sides:
            allowed = b.allowed() if side == "ours" else ""
            busiest, share = use.busiest()
            rows.append(
                f"| {name} | {side} | {use.rate:,.0f} | {use.utilisation:.0%} | "
                f"{use.per_operation_ms(use.busy):.3f} | {use.split()} | {busiest} "
                f"({share:.0%}) | {allowed} |"
            )
    return "\n".join(rows)
