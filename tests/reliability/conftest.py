"""Reliability and security proof (issue 9): quick mode inside `make test`, full mode behind
`make soak` (`LEDGER_RELIABILITY=full`).

- `mode`: the `Mode` of this run; tests size their workloads from it (`mode.pick(quick, full)`).
- `figures`: records the figures a test measured (`figures.record(name, value, unit)`); each
  test module's figures land in `tests/artifacts/reliability/<module>.json`, from which
  `python -m tests.reliability.report` writes docs/reliability.md after a full run.
- Every test's outcome (passed, failed, skipped) and duration go to the same file, as the
  test finishes, so the page says whether the run that made the figures held, and a test
  that fails after recording its figures cannot be shown as if it had passed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

T = TypeVar("T")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "reliability"


@dataclass(frozen=True)
class Mode:
    full: bool

    @property
    def name(self) -> str:
        return "full" if self.full else "quick"

    def pick(self, quick: T, full: T) -> T:
        return full if self.full else quick


def store_of(database_url: str) -> str:
    """`postgres` or `sqlite`: the store a parametrized test runs on, for figure names."""
    return "postgres" if database_url.startswith("postgresql") else "sqlite"


def current_mode() -> Mode:
    return Mode(full=os.environ.get("LEDGER_RELIABILITY", "quick").lower() == "full")


@pytest.fixture(scope="session")
def mode() -> Mode:
    return current_mode()


@dataclass
class Figures:
    module: str
    mode: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    def record(self, name: str, value: float | int | str, unit: str = "", **extra: Any) -> None:
        self.rows.append({"name": name, "value": value, "unit": unit, **extra})

    def write(self) -> None:
        if not self.rows:
            return
        names = {row["name"] for row in self.rows}
        with artifact(self.module, self.mode) as doc:
            kept = [row for row in doc["rows"] if row["name"] not in names]
            doc["rows"] = kept + self.rows


@contextmanager
def artifact(module: str, mode: str) -> Iterator[dict[str, Any]]:
    """The module's recorded document, to update in place; written back on exit. One from a
    run in the other mode is started afresh: quick and full figures are never mixed."""
    path = ARTIFACTS / f"{module}.json"
    doc: dict[str, Any] = {}
    if path.exists():
        doc = orjson.loads(path.read_bytes())
    if doc.get("mode") != mode:
        doc = {}
    doc = {"module": module, "mode": mode, "rows": [], "tests": {}, **doc}
    yield doc
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    written = path.with_name(f".{path.name}.{os.getpid()}")  # then renamed: never half-read
    written.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    written.replace(path)


OUTCOMES: dict[str, dict[str, Any]] = {}  # nodeid -> outcome and seconds so far


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Record each reliability test's outcome once it is known (after its teardown), in the
    process that ran it: under pytest-xdist the controller gets every worker's reports too
    (with `node` set), and two processes writing one file lost or broke it."""
    if not report.nodeid.startswith("tests/reliability/") or hasattr(report, "node"):
        return
    seen = OUTCOMES.setdefault(report.nodeid, {"outcome": "passed", "seconds": 0.0})
    seen["seconds"] += report.duration
    if report.failed:
        seen["outcome"] = "failed" if report.when == "call" else f"error in {report.when}"
    elif report.skipped and seen["outcome"] == "passed":
        seen["outcome"] = "skipped"
    if report.when != "teardown":
        return
    path, test = report.nodeid.split("::", 1)
    module = Path(path).stem
    with artifact(module, current_mode().name) as doc:
        doc["tests"][test] = {
            "outcome": seen["outcome"],
            "seconds": round(seen["seconds"], 1),
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        }


@pytest.fixture(scope="module")
def figures(request: pytest.FixtureRequest, mode: Mode) -> Iterator[Figures]:
    module = request.module.__name__.rsplit(".", 1)[-1]
    recorded = Figures(module=module, mode=mode.name)
    yield recorded
    recorded.write()
