"""The import directions of STYLE.md, checked on the source so they cannot drift silently."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# package -> top-level modules it must never import
FORBIDDEN = {
    "ledger": {
        "starlette",
        "uvicorn",
        "httpx",
        "psycopg",
        "psycopg_pool",
        "sqlite3",
        "aiohttp",
        "orjson",
        "api",
        "projections",
        "delivery",
        "storage",
        "jobledger",
    },
    "projections": {"api", "delivery", "jobledger", "starlette", "httpx"},
    "delivery": {"api", "projections", "jobledger", "starlette"},
    "api": {"jobledger", "psycopg", "psycopg_pool", "sqlite3"},
    "storage": {"api", "projections", "delivery", "jobledger", "starlette", "httpx"},
    "worker": {"api", "starlette", "uvicorn", "jobledger", "delivery"},
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_point_inward(package: str) -> None:
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = imported_modules(path) & FORBIDDEN[package]
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {', '.join(sorted(bad))}")
    assert not offenders, "\n".join(offenders)


def test_ledger_imports_only_stdlib_and_eventsourcing() -> None:
    import sys

    allowed = set(sys.stdlib_module_names) | {"eventsourcing", "ledger"}
    offenders = []
    for path in sorted((ROOT / "ledger").rglob("*.py")):
        bad = imported_modules(path) - allowed
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {', '.join(sorted(bad))}")
    assert not offenders, "\n".join(offenders)
