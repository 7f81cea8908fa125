"""The bench's own helpers: /proc readings, the "within 1.2x" rows, the plots it writes."""

from __future__ import annotations

import os

import pytest

from bench import cpu, plots
from bench.__main__ import Turn, median_turn, read_p99_figure, turns_note
from bench.delivery_figures import DELIVERY_PROCESS, Latency
from bench.load import ImpossibleLatencies, Result, parse_wrk
from bench.scale_figures import TARGET, _label, _within
from bench.support import Figure, Floor, LatencyFloor, cpu_seconds, rss_mb


def test_proc_readings_of_this_process() -> None:
    before = cpu_seconds(os.getpid())
    sum(i * i for i in range(300_000))  # burn a little CPU
    assert cpu_seconds(os.getpid()) >= before
    assert 5 < rss_mb(os.getpid()) < 10_000


def test_cpu_measure_counts_this_process_and_the_machine() -> None:
    use = cpu.Use()
    with cpu.measure(use, {"bench": os.getpid(), "gone": 2**22 + 1}):
        sum(i * i for i in range(3_000_000))  # about 0.2 s of CPU
    use.operations = 10
    assert use.seconds > 0
    assert use.parts["bench"] > 0.05  # ticks of 10 ms
    assert use.parts["gone"] == 0.0  # no such process: counted under other
    assert use.busy >= use.parts["bench"] * 0.8  # the machine saw at least this process
    assert 0 < use.utilisation <= 1.05
    assert cpu.POSTGRES in use.parts


def test_cpu_budget_ratio_and_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    ours = cpu.Use(1000, 1.0, 1.6, {cpu.POSTGRES: 0.4, "api": 0.9})
    raw = cpu.Use(4000, 1.0, 1.6, {cpu.POSTGRES: 1.4})
    budget = cpu.Budget("POST", ours, "raw", raw, 0.5)
    assert budget.ceiling == pytest.approx(0.25)  # 1.6 ms against 0.4 ms per operation
    assert ours.split() == "postgres 0.400, api 0.900, other 0.300"
    assert ours.busiest() == ("api", pytest.approx(0.9))  # postgres is many processes
    assert raw.busiest() == ("-", 0.0)
    rows = cpu.table([budget]).splitlines()
    assert len(rows) == 4
    assert "| POST | ours | 1,000 | 80% | 1.600 |" in rows[2]  # 1.6 s busy of 2 cores x 1 s
    # one core does 1 / 0.9 ms = 1,111 api calls a second: 0.28x of the baseline's 4,000
    assert budget.interpreter_ceiling == pytest.approx(1111.1 / 4000, rel=1e-3)
    assert (
        "| machine 0.25x, api 0.28x (target 0.5x needs <= 0.800 ms on the machine and "
        "<= 0.500 ms in api) |"
    ) in rows[2]
    assert rows[3].startswith("| raw | baseline | 4,000 | 80% | 0.400 |")


def test_the_latency_figure_names_its_stages_and_how_busy_the_cores_were(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    use = cpu.Use(2000, 20.0, 29.0, {DELIVERY_PROCESS: 14.6, cpu.POSTGRES: 3.0})
    stages = {"fan-out": (19.8, 58.0), "queue + claim": (11.4, 23.7), "HTTP": (2.6, 7.5)}
    run = Latency([30.0, 40.0], 2000, use, stages)
    assert use.share(DELIVERY_PROCESS) == pytest.approx(0.73)
    assert run.explained(0) == (
        "stages p50 ms: fan-out 20, queue + claim 11, HTTP 3; delivery process at 73% of a "
        "core, machine 72% busy"
    )
    assert run.explained(1).startswith("stages p99 ms: fan-out 58, queue + claim 24, HTTP 8;")
    unread = Latency([], 2000, cpu.Use(), {})
    assert unread.explained(0) == (
        "stages p50 ms: not read; delivery process at 0% of a core, machine 0% busy"
    )


def test_wrk_figures_are_read_and_impossible_latencies_refused() -> None:
    # 32 connections for 8 s: their latencies can add up to 256 s at most
    fine = parse_wrk("Running 8s test\nJOBLEDGER 72000 8.0 3.1 9.0 0 3.5\n", 32)
    assert (fine.requests, fine.errors, fine.p50_ms, fine.p99_ms) == (72000, 0, 3.1, 9.0)
    assert round(fine.rate) == 9000
    with pytest.raises(ImpossibleLatencies, match=r"5\.1x"):
        parse_wrk("JOBLEDGER 72221 8.0 3.8 546.3 0 18.16\n", 32)  # 1,311 s of latency
    with pytest.raises(RuntimeError, match="nothing usable"):
        parse_wrk("Running 8s test\n", 32)


def test_within_compares_the_lower_value_with_the_higher_either_way() -> None:
    assert _within("x", "MB", 100, 119).ratio >= TARGET  # within 1.2x
    assert _within("x", "MB", 119, 100).ratio >= TARGET
    assert _within("x", "MB", 100, 125).ratio < TARGET
    assert _within("x", "MB", 125, 100).ratio < TARGET
    assert (_label(1_000_000), _label(50_000)) == ("1M", "50k")


def test_plots_are_written_and_embedded(tmp_path, monkeypatch) -> None:
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(plots, "LATENCIES", [])
    monkeypatch.setattr(plots, "RSS", {"10k": {"api": 100.0}, "50k": {"api": 110.0}})
    plots.record_latency("GET", Result(requests=10, errors=0, seconds=1.0, p50_ms=2, p99_ms=9))
    figures = [
        Figure("met", "req/s", 90, "base", 100, 0.5),
        Figure("no target", "req/s", 1, "-", 0, None),
    ]
    text = plots.write(figures, tmp_path / "perf")
    for name in ("ratios.png", "latency.png", "rss.png"):
        png = tmp_path / "perf" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(perf/{name})" in text


def test_the_read_latency_row_names_the_target_and_the_closed_loop_mean() -> None:
    ours = Result(requests=40_000, errors=0, seconds=10.0, p50_ms=7.0, p99_ms=13.2)  # 4,000/s
    plain = Result(requests=32_000, errors=0, seconds=10.0, p50_ms=9.0, p99_ms=14.8)  # 3,200/s
    row = read_p99_figure(ours, plain)
    assert (row.value, row.baseline, row.target) == (13.2, 14.8, None)
    assert "target <= 10 ms: NOT met" in row.name
    assert "32 / rate: 8.0 ms here, 10.0 ms for the plain read" in row.name
    assert "needs well over 3,200 reads/s" in row.name
    fast = Result(requests=80_000, errors=0, seconds=10.0, p50_ms=3.0, p99_ms=9.5)
    assert "target <= 10 ms: met;" in read_p99_figure(fast, plain).name


def test_the_median_turn_is_one_whole_run_and_the_spread_is_named() -> None:
    def run(rate: float, p99_ms: float) -> Result:
        return Result(requests=int(rate * 10), errors=0, seconds=10.0, p50_ms=1.0, p99_ms=p99_ms)

    turns = [
        Turn(4000.0, run(1600, 30.0)),  # 0.40x
        Turn(3000.0, run(1800, 90.0)),  # 0.60x: the fastest run, not the median
        Turn(4400.0, run(2200, 20.0)),  # 0.50x
    ]
    median = median_turn(turns)
    assert median is turns[2]  # its own baseline and p99 come with it
    assert (median.baseline, median.result.p99_ms, median.ratio) == (4400.0, 20.0, 0.5)
    assert turns_note(turns) == (
        "; the median of 3 runs, each beside its own baseline run: 0.40x, 0.60x, 0.50x"
    )
    assert turns_note(turns[:1]) == ""  # one run (--quick): nothing to say
    assert median_turn(turns[:1]) is turns[0]


def test_a_floor_says_whose_reach_a_target_is_out_of() -> None:
    within = Floor("figure 2", "send and record", ours=1000, floor=6000, baseline=8000, target=0.5)
    assert within.explained() == (
        "- figure 2: the floor (send and record) runs at 0.75x the baseline, ours at 0.12x, "
        "against a target of 0.5x: the target is within reach of this work alone; ours takes "
        "6.0x the floor's time, and that is our code's own cost."
    )
    beyond = Floor("figure 5", "read and write", ours=1000, floor=3000, baseline=8000, target=0.5)
    assert "the floor itself misses the target" in beyond.explained()
    assert "0.38x the baseline" in beyond.explained()


def test_a_latency_floor_is_met_from_below() -> None:
    slow = LatencyFloor("figure 4", "the plain read", ours_ms=15.0, floor_ms=17.2, target_ms=10)
    assert slow.explained() == (
        "- figure 4: the floor (the plain read) takes 17.2 ms, ours 15.0 ms, against a target "
        "of 10 ms: the floor itself misses the target, so nothing that does this work reaches "
        "it on this machine."
    )
    fast = LatencyFloor("figure 4", "the plain read", ours_ms=15.0, floor_ms=6.0, target_ms=10)
    assert fast.explained().endswith("the target is within reach of this work alone.")
