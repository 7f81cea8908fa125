"""The served OpenAPI document: valid OpenAPI 3.1, exactly the app's routes, and docs/api.md
names exactly its operations and problem types."""

from __future__ import annotations

import re
from pathlib import Path

from openapi_spec_validator import validate
from starlette.routing import Route

from api.app import create_app
from api.openapi import OPERATIONS, build_document
from api.problems import PROBLEM_TYPES

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "api.md"


class NoLedger:
    """create_app must not touch the ledger while building."""


def document_operations() -> set[tuple[str, str]]:
    document = build_document(max_body_bytes=1024)
    return {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}


def test_document_is_valid_openapi_3_1() -> None:
    document = build_document(max_body_bytes=1024)
    validate(document)
    assert document["openapi"] == "3.1.0"


def test_document_lists_exactly_the_apps_routes() -> None:
    app = create_app(NoLedger())  # type: ignore[arg-type]
    served = {
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route)
        for method in (route.methods or set()) - {"HEAD"}
    }
    assert served == document_operations()
    assert len(OPERATIONS) == len(served)


def test_every_operation_documents_its_problems() -> None:
    document = build_document(max_body_bytes=1024)
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            codes = set(op["responses"])
            if path.startswith("/v1/"):
                assert {"400", "401", "403", "500", "503"} <= codes, (method, path)
            if "{" in path:
                assert "404" in codes, (method, path)
            if "requestBody" in op:
                assert {"413", "415", "422"} <= codes, (method, path)
                schema = op["requestBody"]["content"]["application/json"]["schema"]
                assert schema["additionalProperties"] is False


def test_guide_names_exactly_the_documented_operations() -> None:
    text = GUIDE.read_text()
    headings = set(re.findall(r"^### (GET|POST|DELETE|PATCH|PUT) (\S+)$", text, re.M))
    assert headings == document_operations()
    for method, path in headings:  # each operation's section has a curl example
        section = text.split(f"### {method} {path}\n", 1)[1].split("\n### ", 1)[0]
        assert "curl " in section, (method, path)


def test_guide_lists_every_problem_type() -> None:
    text = GUIDE.read_text()
    rows = dict(re.findall(r"^\s*\| `([a-z-]+)` \| (\d{3}) \|", text, re.M))
    assert rows == {slug: str(status) for slug, (status, _) in PROBLEM_TYPES.items()}
