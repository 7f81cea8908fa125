"""Reliability and security proof (issue 9): quick mode inside `make test`, full mode behind
`make soak` (`LEDGER_RELIABILITY=full`).

- `mode`: the `Mode` of this run; tests size their workloads from it (`mode.pick(quick, full)`).
- `figures`: records the figures a test measured (`figures.record(name, value, unit)`); each
  test module's figures land in `tests/artifacts/reliability/<module>.json`, from which
  `python -m tests.reliability.report` writes docs/reliability.md after a full run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
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
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{self.module}.json"
        existing: list[dict[str, Any]] = []
        if path.exists():
            existing = orjson.loads(path.read_bytes()).get("rows", [])
        names = {row["name"] for row in self.rows}
        kept = [row for row in existing if row["name"] not in names]
        doc = {"module": self.module, "mode": self.mode, "rows": kept + self.rows}
        path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))


@pytest.fixture(scope="module")
def figures(request: pytest.FixtureRequest, mode: Mode) -> Iterator[Figures]:
    module = request.module.__name__.rsplit(".", 1)[-1]
    recorded = Figures(module=module, mode=mode.name)
    yield recorded
    recorded.write()
