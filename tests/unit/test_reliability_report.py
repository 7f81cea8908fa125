"""docs/reliability.md says how each module's tests ended next to the figures they recorded, and
quick figures never mix into a full run's file."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.reliability import conftest as reliability
from tests.reliability.report import render


@pytest.fixture
def artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(reliability, "ARTIFACTS", tmp_path)
    return tmp_path


def test_a_failed_test_is_named_beside_its_figures(artifacts: Path) -> None:
    figures = reliability.Figures(module="test_load", mode="full")
    figures.record("RSS projector", "94 -> 131", "MiB", growth_percent=39.4)
    figures.write()
    with reliability.artifact("test_load", "full") as doc:
        doc["tests"]["test_sustained_load"] = {"outcome": "failed", "seconds": 700.0}
    with reliability.artifact("test_security", "full") as doc:
        doc["tests"]["test_a"] = {"outcome": "passed", "seconds": 30.0}
        doc["tests"]["test_b"] = {"outcome": "skipped", "seconds": 0.0}

    page = render(artifacts)

    assert "| `test_load` | full | 0 | **1** | 0 | 11.7 min |" in page
    assert "| `test_security` | full | 1 | 0 | 1 | 0.5 min |" in page
    assert "| all | | | | | 12.2 min |" in page
    assert "Outcome: **1 failed**. Failed: `test_sustained_load` (failed)." in page
    assert "Outcome: 1 passed, 1 skipped." in page
    assert "| RSS projector | 94 -> 131 | MiB | growth_percent 39.4 |" in page


def test_a_run_in_the_other_mode_starts_the_file_afresh(artifacts: Path) -> None:
    full = reliability.Figures(module="test_load", mode="full")
    full.record("create p99", 41.0, "ms")
    full.write()
    quick = reliability.Figures(module="test_load", mode="quick")
    quick.record("create p50", 8.0, "ms")
    quick.write()

    doc = orjson.loads((artifacts / "test_load.json").read_bytes())
    assert doc["mode"] == "quick"
    assert [row["name"] for row in doc["rows"]] == ["create p50"]


def test_figures_of_the_same_mode_are_merged_by_name(artifacts: Path) -> None:
    for value in (1.0, 2.0):
        figures = reliability.Figures(module="test_fuzz", mode="full")
        figures.record("examples", value)
        figures.write()
    with reliability.artifact("test_fuzz", "full") as doc:
        assert [row["value"] for row in doc["rows"]] == [2.0]


def _report(when: str, *, from_worker: bool = False) -> pytest.TestReport:
    report = pytest.TestReport(
        "tests/reliability/test_load.py::test_x", ("", 0, ""), {}, "passed", None, when, [], 1.0
    )
    if from_worker:
        report.node = object()  # what pytest-xdist's controller sets on a worker's report
    return report


def test_outcomes_are_written_only_where_the_test_ran(
    artifacts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under pytest-xdist the controller receives every worker's reports as well: if both wrote
    the file, one read it half-written (an INTERNALERROR that ended `make test`)."""
    monkeypatch.setattr(reliability, "OUTCOMES", {})
    for when in ("setup", "call", "teardown"):
        reliability.pytest_runtest_logreport(_report(when, from_worker=True))
    assert not (artifacts / "test_load.json").exists()

    for when in ("setup", "call", "teardown"):
        reliability.pytest_runtest_logreport(_report(when))
    doc = orjson.loads((artifacts / "test_load.json").read_bytes())
    assert doc["tests"]["test_x"]["outcome"] == "passed"
    assert doc["tests"]["test_x"]["seconds"] == 3.0
    assert [p.name for p in artifacts.iterdir()] == ["test_load.json"]  # no temporary left
