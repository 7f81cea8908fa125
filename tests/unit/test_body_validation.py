"""The fast body validator (jsonschema_rs) and the one that names the faults (jsonschema) agree:
a body the fast one passes has no errors under the other, on every request schema, for bodies
made by breaking valid ones: everywhere once, then at random."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from api import schemas
from api import webhook_schemas as ws
from api.problems import Problem

VALID_BODIES: dict[str, tuple[schemas.JSONSchema, dict[str, Any]]] = {
    "new job": (
        schemas.NEW_JOB,
        {
            "account_id": "acct",
            "board_id": "board",
            "publish_at": "2026-11-23T10:00:00Z",
            "pin": {
                "title": "t",
                "link": "https://example.com/x",
                "media_source": {"source_type": "image_url", "url": "https://e.com/i.jpg"},
            },
            "metadata": {"k": "v"},
        },
    ),
    "new tenant": (schemas.NEW_TENANT, {"name": "Acme"}),
    "new endpoint": (
        ws.NEW_ENDPOINT,
        {"url": "https://hooks.example.com/x", "event_types": ["job.published"]},
    ),
    "endpoint changes": (ws.ENDPOINT_CHANGES, {"disabled": True}),
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(["", "https://e.com/x", "http://", "image_url", "job.published", "x" * 600]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths(child, (*prefix, index))
    return found


@st.composite
def broken_bodies(draw: st.DrawFn) -> tuple[schemas.JSONSchema, Any]:
    schema, valid = VALID_BODIES[draw(st.sampled_from(sorted(VALID_BODIES)))]
    body: Any = copy.deepcopy(valid)
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.sampled_from(paths(body)))
        if not where:
            body = draw(json_values)
            continue
        parent = body
        for part in where[:-1]:
            parent = parent[part]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[where[-1]]
        else:
            parent[where[-1]] = draw(json_values)
    if isinstance(body, dict) and draw(st.booleans()):
        body[draw(st.text(min_size=1, max_size=8))] = draw(json_values)
    return schema, body


REPLACEMENTS: list[Any] = [
    None,
    True,
    0,
    -1,
    1.5,
    "",
    "nonsense",
    "x" * 600,
    "https://e.com/x",
    "2026-11-23T10:00:00Z",
    [],
    ["job.published", "nope"],
    {},
    {"x": 1},
]
DELETE = object()


def single_mutations(body: dict[str, Any]) -> list[Any]:
    """Every body that differs from `body` in one place: a value deleted or replaced."""
    made: list[Any] = []
    for where in paths(body):
        if not where:
            continue
        for value in [DELETE, *REPLACEMENTS]:
            mutated = copy.deepcopy(body)
            parent = mutated
            for part in where[:-1]:
                parent = parent[part]
            if value is DELETE:
                if isinstance(parent, list):
                    continue
                del parent[where[-1]]
            else:
                parent[where[-1]] = copy.deepcopy(value)
            made.append(mutated)
    return made


def test_validators_agree_on_every_single_mutation() -> None:
    checked = 0
    for schema, valid in VALID_BODIES.values():
        validators = schemas._validators(schema)
        for body in [valid, *single_mutations(valid)]:
            full_errors = list(validators.full.iter_errors(body))
            assert validators.fast.is_valid(body) == (not full_errors), (body, full_errors)
            checked += 1
    assert checked > 200


@settings(max_examples=200, deadline=None)
@given(broken_bodies())
def test_fast_and_full_validators_agree(case: tuple[schemas.JSONSchema, Any]) -> None:
    schema, body = case
    validators = schemas._validators(schema)
    full_errors = list(validators.full.iter_errors(body))
    assert validators.fast.is_valid(body) == (not full_errors), full_errors


def test_a_valid_body_passes_and_a_broken_one_names_its_fields() -> None:
    schema, body = VALID_BODIES["new job"]
    schemas.validate_body(schema, body)
    broken = {**body, "pin": {**body["pin"], "title": 5}, "surprise": 1}
    try:
        schemas.validate_body(schema, broken)
    except Problem as problem:
        names = {p["name"] for p in problem.invalid_params or []}
        assert names == {"pin.title", "surprise"}
    else:
        raise AssertionError("a broken body passed")
