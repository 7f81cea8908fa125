"""The API's schemas, as data: defined once, used both to validate and to publish OpenAPI.

Request bodies are JSON Schema (Draft 2020-12): a compiled `jsonschema_rs` validator answers
"valid?" in microseconds, and only an invalid body goes through `jsonschema`, whose errors name
every field at fault (it also decides, should the two ever disagree). Query parameters,
path parameters and headers are `Param`s whose schema drives both their parsing here and their
entry in `/openapi.json`, so the document and the server cannot drift. Limits come from
`ledger.request` (Pinterest's field limits), which still enforces the product rules itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import jsonschema_rs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from api.problems import Problem
from api.rfc3339 import parse_datetime
from ledger.job import JobState
from ledger.request import (
    ALT_TEXT_MAX,
    DESCRIPTION_MAX,
    ID_MAX,
    LINK_MAX,
    MAX_SIMULATE_STEPS,
    MEDIA_SOURCE_TYPES,
    METADATA_KEY_MAX,
    METADATA_MAX_KEYS,
    METADATA_VALUE_MAX,
    MODES,
    SIMULATED_OUTCOMES,
    TITLE_MAX,
    URL_MAX,
)
from ledger.tenancy import LABEL_MAX, NAME_MAX, ROLES, TENANT_ROLES
from projections.stuck import REASONS

REASON_MAX = 500
IDEMPOTENCY_KEY_MAX = 255
LIST_LIMIT_DEFAULT = 20
LIST_LIMIT_MAX = 100
STUCK_LIMIT_DEFAULT = 100
STUCK_LIMIT_MAX = 1000

JSONSchema = dict[str, Any]


def _nullable(schema: JSONSchema) -> JSONSchema:
    return {"anyOf": [schema, {"type": "null"}]}


_URL = {"type": "string", "minLength": 1, "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://"}
_ID = {"type": "string", "minLength": 1, "maxLength": ID_MAX}
_TIME = {"type": "string", "format": "date-time"}
_UUID = {"type": "string", "format": "uuid"}

# -- request bodies --

MEDIA_SOURCE: JSONSchema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["source_type", "url"],
    "properties": {
        "source_type": {"type": "string", "enum": list(MEDIA_SOURCE_TYPES)},
        "url": {**_URL, "maxLength": URL_MAX, "description": "Image URL (http or https)."},
    },
}

PIN: JSONSchema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["media_source"],
    "properties": {
        "title": _nullable({"type": "string", "maxLength": TITLE_MAX}),
        "description": _nullable({"type": "string", "maxLength": DESCRIPTION_MAX}),
        "link": _nullable({**_URL, "maxLength": LINK_MAX}),
        "alt_text": _nullable({"type": "string", "maxLength": ALT_TEXT_MAX}),
        "media_source": MEDIA_SOURCE,
    },
}

NEW_JOB: JSONSchema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["account_id", "board_id", "pin"],
    "properties": {
        "account_id": {**_ID, "description": "The Pinterest account (the pacing lane)."},
        "board_id": _ID,
        "pin": PIN,
        "publish_at": _nullable(
            {**_TIME, "description": "RFC 3339; the job is not run before this time."}
        ),
        "mode": {"type": "string", "enum": list(MODES), "default": "sandbox"},
        "simulate": _nullable(
            {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_SIMULATE_STEPS,
                "items": {"type": "string", "enum": list(SIMULATED_OUTCOMES)},
                "description": "Sandbox only: the outcome of each attempt, in order.",
            }
        ),
        "metadata": {
            "type": "object",
            "maxProperties": METADATA_MAX_KEYS,
            "propertyNames": {"minLength": 1, "maxLength": METADATA_KEY_MAX},
            "additionalProperties": {"type": "string", "maxLength": METADATA_VALUE_MAX},
        },
    },
}

JOB_ACTION: JSONSchema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"reason": _nullable({"type": "string", "maxLength": REASON_MAX})},
}

NEW_TENANT: JSONSchema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {"name": {"type": "string", "minLength": 1, "maxLength": NAME_MAX}},
}

NEW_KEY: JSONSchema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["role"],
    "properties": {
        "role": {"type": "string", "enum": list(TENANT_ROLES)},
        "label": _nullable({"type": "string", "minLength": 1, "maxLength": LABEL_MAX}),
    },
}

# -- responses --

PROBLEM: JSONSchema = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "invalid_params": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "reason"],
                "properties": {"name": {"type": "string"}, "reason": {"type": "string"}},
            },
        },
    },
}

_ERROR = _nullable(
    {
        "type": "object",
        "required": ["code", "message", "retryable", "ambiguous", "attempt"],
        "properties": {
            "code": {"type": "string"},
            "message": {"type": "string"},
            "retryable": {"type": "boolean"},
            "ambiguous": {"type": "boolean"},
            "attempt": {"type": "integer"},
        },
    }
)
_STRING_OR_NULL = {"type": ["string", "null"]}
_TIME_OR_NULL = {"type": ["string", "null"], "format": "date-time"}

PIN_OUT: JSONSchema = {
    "type": "object",
    "required": ["title", "description", "link", "alt_text", "media_source"],
    "properties": {
        "title": _STRING_OR_NULL,
        "description": _STRING_OR_NULL,
        "link": _STRING_OR_NULL,
        "alt_text": _STRING_OR_NULL,
        "media_source": {
            "type": "object",
            "required": ["source_type", "url"],
            "properties": {"source_type": {"type": "string"}, "url": {"type": "string"}},
        },
    },
}

JOB: JSONSchema = {
    "type": "object",
    "required": [
        "id",
        "tenant_id",
        "idempotency_key",
        "state",
        "account_id",
        "board_id",
        "pin",
        "publish_at",
        "mode",
        "simulate",
        "metadata",
        "attempts",
        "last_error",
        "external_ref",
        "created_at",
        "updated_at",
        "state_entered_at",
        "next_run_at",
        "lease_expires_at",
        "version",
    ],
    "properties": {
        "id": _UUID,
        "tenant_id": {"type": "string"},
        "idempotency_key": {"type": "string"},
        "state": {"type": "string", "enum": [str(s) for s in JobState]},
        "account_id": {"type": "string"},
        "board_id": {"type": "string"},
        "pin": PIN_OUT,
        "publish_at": _TIME_OR_NULL,
        "mode": {"type": "string", "enum": list(MODES)},
        "simulate": {"type": ["array", "null"], "items": {"type": "string"}},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        "attempts": {"type": "integer", "minimum": 0},
        "last_error": _ERROR,
        "external_ref": _STRING_OR_NULL,
        "created_at": _TIME,
        "updated_at": _TIME,
        "state_entered_at": _TIME,
        "next_run_at": _TIME_OR_NULL,
        "lease_expires_at": _TIME_OR_NULL,
        "version": {"type": "integer", "minimum": 1},
    },
}

JOB_LIST: JSONSchema = {
    "type": "object",
    "required": ["jobs", "next_cursor"],
    "properties": {
        "jobs": {"type": "array", "items": JOB},
        "next_cursor": {
            "type": ["string", "null"],
            "description": "Pass as `cursor` for the next page; null on the last page.",
        },
    },
}

EVENT: JSONSchema = {
    "type": "object",
    "required": [
        "id",
        "job_id",
        "type",
        "version",
        "occurred_at",
        "actor",
        "data",
        "prev_hash",
        "hash",
    ],
    "properties": {
        "id": _UUID,
        "job_id": _UUID,
        "type": {"type": "string", "examples": ["JobCreated", "JobPublished"]},
        "version": {"type": "integer", "minimum": 1},
        "occurred_at": _TIME,
        "actor": {"type": "string"},
        "data": {"type": "object"},
        "prev_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
    },
}

EVENT_LIST: JSONSchema = {
    "type": "object",
    "required": ["job_id", "events"],
    "properties": {"job_id": _UUID, "events": {"type": "array", "items": EVENT}},
}

_ANCHOR = {
    "type": ["object", "null"],
    "required": ["id", "type", "version", "occurred_at", "prev_hash", "hash"],
    "properties": {
        "id": {"type": "string"},
        "type": {"type": "string"},
        "version": {"type": "integer"},
        "occurred_at": _TIME,
        "prev_hash": {"type": "string"},
        "hash": {"type": "string"},
    },
}

RECEIPT: JSONSchema = {
    "type": "object",
    "required": ["receipt_version", "job", "outcome", "attempts", "actions", "evidence"],
    "properties": {
        "receipt_version": {"const": 1},
        "job": {"type": "object"},
        "outcome": {
            "type": "object",
            "required": ["state", "external_ref", "last_error", "attempts", "version"],
        },
        "attempts": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["attempt", "outcome", "started_at", "ended_at", "error", "receipt"],
            },
        },
        "actions": {"type": "array", "items": {"type": "object"}},
        "evidence": {
            "type": "object",
            "required": ["events", "first_event", "last_event", "how_to_verify"],
            "properties": {
                "events": {"type": "integer"},
                "first_event": _ANCHOR,
                "last_event": _ANCHOR,
                "how_to_verify": {"type": "string"},
            },
        },
    },
}

KEY: JSONSchema = {
    "type": "object",
    "required": ["id", "tenant_id", "role", "label", "created_at", "revoked_at"],
    "properties": {
        "id": _UUID,
        "tenant_id": _STRING_OR_NULL,
        "role": {"type": "string", "enum": list(ROLES)},
        "label": _STRING_OR_NULL,
        "created_at": _TIME,
        "revoked_at": _TIME_OR_NULL,
    },
}

ISSUED_KEY: JSONSchema = {
    **KEY,
    "required": [*KEY["required"], "token"],
    "properties": {
        **KEY["properties"],
        "token": {
            "type": "string",
            "pattern": "^jlk_[0-9a-f]{32}_[A-Za-z0-9_-]+$",
            "description": "The bearer token. Shown only in this response; store it safely.",
        },
    },
}

KEY_LIST: JSONSchema = {
    "type": "object",
    "required": ["keys", "next_cursor"],
    "properties": {
        "keys": {"type": "array", "items": KEY},
        "next_cursor": {"type": ["string", "null"]},
    },
}

TENANT: JSONSchema = {
    "type": "object",
    "required": ["id", "name", "created_at", "keys", "active_keys"],
    "properties": {
        "id": _UUID,
        "name": {"type": "string"},
        "created_at": _TIME,
        "keys": {"type": "integer", "minimum": 0},
        "active_keys": {"type": "integer", "minimum": 0},
    },
}

CREATED_TENANT: JSONSchema = {
    **TENANT,
    "required": [*TENANT["required"], "key"],
    "properties": {**TENANT["properties"], "key": ISSUED_KEY},
}

HEALTH: JSONSchema = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"type": "string"}},
}

READINESS: JSONSchema = {
    "type": "object",
    "required": ["status", "log_position", "max_lag_events", "projections"],
    "properties": {
        "status": {"const": "ready"},
        "log_position": {"type": "integer", "minimum": 0, "description": "The log's end."},
        "max_lag_events": {"type": "integer", "minimum": 0},
        "projections": {
            "type": "object",
            "description": "Each read model by name: the log position it has applied, and how "
            "many log entries it is behind.",
            "additionalProperties": {
                "type": "object",
                "required": ["position", "lag_events"],
                "properties": {
                    "position": {"type": "integer", "minimum": 0},
                    "lag_events": {"type": "integer", "minimum": 0},
                },
            },
        },
    },
}

_COUNTS = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}

STUCK_JOB: JSONSchema = {
    "type": "object",
    "required": [
        "job_id",
        "tenant_id",
        "state",
        "account_id",
        "board_id",
        "attempts",
        "reason",
        "why",
        "since",
        "age_seconds",
        "next_run_at",
        "lease_expires_at",
    ],
    "properties": {
        "job_id": _UUID,
        "tenant_id": {"type": "string"},
        "state": {"type": "string", "enum": [str(s) for s in JobState]},
        "account_id": {"type": "string"},
        "board_id": {"type": "string"},
        "attempts": {"type": "integer", "minimum": 0},
        "reason": {"type": "string", "enum": list(REASONS)},
        "why": {"type": "string", "description": "The reason in words, with its threshold."},
        "since": {**_TIME, "description": "When the job crossed into this condition's clock."},
        "age_seconds": {"type": "number", "description": "Seconds since `since`."},
        "next_run_at": _TIME_OR_NULL,
        "lease_expires_at": _TIME_OR_NULL,
    },
}

AUDIT_REPORT: JSONSchema = {
    "type": "object",
    "required": ["ok", "events", "checkpoints", "digest", "position", "first_break"],
    "properties": {
        "ok": {"type": "boolean", "description": "every hash chain and checkpoint verifies"},
        "events": {"type": "integer", "description": "events verified"},
        "checkpoints": {"type": "integer", "description": "checkpoints matched"},
        "digest": {"type": "string", "description": "the log digest at `position`"},
        "position": {"type": "integer", "description": "the last log position verified"},
        "first_break": {
            "anyOf": [
                {
                    "type": "object",
                    "required": ["position", "job_id", "version", "reason"],
                    "properties": {
                        "position": {"type": ["integer", "null"]},
                        "job_id": {"type": ["string", "null"]},
                        "version": {"type": ["integer", "null"]},
                        "reason": {"type": "string"},
                    },
                },
                {"type": "null"},
            ],
            "description": "the first event that does not verify, or null",
        },
    },
}

STUCK_REPORT: JSONSchema = {
    "type": "object",
    "required": [
        "tenant_id",
        "generated_at",
        "thresholds",
        "counts_by_state",
        "counts_by_account",
        "oldest_queued_age_seconds",
        "stuck",
    ],
    "properties": {
        "tenant_id": {
            "type": ["string", "null"],
            "description": "The tenant reported on; null for every tenant (admin keys).",
        },
        "generated_at": _TIME,
        "thresholds": {
            "type": "object",
            "required": [
                "queued_seconds",
                "overdue_seconds",
                "lease_grace_seconds",
                "max_retrying_attempts",
            ],
            "properties": {
                "queued_seconds": {"type": "number"},
                "overdue_seconds": {"type": "number"},
                "lease_grace_seconds": {"type": "number"},
                "max_retrying_attempts": {"type": "integer"},
            },
        },
        "counts_by_state": {**_COUNTS, "description": "Jobs by state (states with none left out)."},
        "counts_by_account": {"type": "object", "additionalProperties": _COUNTS},
        "oldest_queued_age_seconds": {"type": ["number", "null"]},
        "stuck": {
            "type": "array",
            "items": STUCK_JOB,
            "description": "Oldest first; one entry per job and reason (a job may be listed "
            "under two reasons), at most `limit`.",
        },
    },
}


# -- parameters (query, path, header) --


@dataclass(frozen=True)
class Param:
    name: str
    location: str  # "query", "path" or "header"
    schema: JSONSchema
    description: str
    required: bool = False

    def openapi(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "in": self.location,
            "required": self.required or self.location == "path",
            "description": self.description,
            "schema": self.schema,
        }

    def parse(self, raw: str) -> Any:
        """The value `raw` stands for, per the schema; a 400 problem naming the parameter."""
        schema = self.schema
        kind = schema.get("type")
        value: Any = raw
        if "\x00" in raw:
            raise Problem.parameter(self.name, NUL_REASON)
        if kind == "integer":
            if not raw.isascii() or not raw.lstrip("-").isdigit() or len(raw) > 12:
                raise Problem.parameter(self.name, "must be a whole number")
            value = int(raw)
            if "minimum" in schema and value < schema["minimum"]:
                raise Problem.parameter(self.name, f"must be at least {schema['minimum']}")
            if "maximum" in schema and value > schema["maximum"]:
                raise Problem.parameter(self.name, f"must be at most {schema['maximum']}")
            return value
        if "enum" in schema and raw not in schema["enum"]:
            raise Problem.parameter(self.name, f"must be one of {', '.join(schema['enum'])}")
        if len(raw) < schema.get("minLength", 0):
            raise Problem.parameter(self.name, f"must be at least {schema['minLength']} long")
        if "maxLength" in schema and len(raw) > schema["maxLength"]:
            raise Problem.parameter(self.name, f"must be at most {schema['maxLength']} characters")
        if schema.get("format") == "uuid":
            try:
                canonical = str(UUID(raw))
            except ValueError:
                canonical = None
            if canonical != raw.lower():  # UUID() also takes braces, URNs and bare hex
                raise Problem.parameter(self.name, "must be a UUID (8-4-4-4-12 hex digits)")
            return canonical
        if schema.get("format") == "date-time":
            try:
                return parse_datetime(raw)
            except ValueError as error:
                raise Problem.parameter(self.name, str(error)) from None
        return value


def parse_query(params: list[tuple[str, str]], allowed: list[Param]) -> dict[str, Any]:
    """Parse query parameters: unknown or repeated ones are refused, naming them."""
    by_name = {p.name: p for p in allowed}
    values: dict[str, Any] = {}
    for name, raw in params:
        param = by_name.get(name)
        if param is None:
            known = ", ".join(by_name) or "none"
            raise Problem.parameter(name, f"is not a parameter of this operation (known: {known})")
        if name in values:
            raise Problem.parameter(name, "is given more than once")
        values[name] = param.parse(raw)
    return values


LIMIT = Param(
    "limit",
    "query",
    {
        "type": "integer",
        "minimum": 1,
        "maximum": LIST_LIMIT_MAX,
        "default": LIST_LIMIT_DEFAULT,
    },
    "Page size.",
)
CURSOR = Param(
    "cursor",
    "query",
    {"type": "string", "minLength": 1, "maxLength": 200},
    "The `next_cursor` of the previous page, as returned.",
)
MIN_POSITION = Param(
    "min_position",
    "query",
    {"type": "integer", "minimum": 0, "maximum": 999_999_999_999},
    "Read-your-writes: the `Ledger-Position` header of your write. The read then reflects at "
    "least that write (it waits briefly for the read model if needed).",
)
LIST_JOBS_PARAMS = [
    Param(
        "state",
        "query",
        {"type": "string", "enum": [str(s) for s in JobState]},
        "Only jobs in this state.",
    ),
    Param("account_id", "query", _ID, "Only jobs of this account."),
    Param("board_id", "query", _ID, "Only jobs for this board."),
    Param("created_after", "query", _TIME, "Only jobs created after this time (RFC 3339)."),
    Param("created_before", "query", _TIME, "Only jobs created before this time (RFC 3339)."),
    LIMIT,
    CURSOR,
    MIN_POSITION,
]
AS_OF = Param(
    "as_of", "query", _TIME, "Rebuild the job as it was at this time (RFC 3339) from its events."
)
RECEIPT_FORMAT = Param(
    "format",
    "query",
    {"type": "string", "enum": ["json", "md"], "default": "json"},
    "`md` answers the same receipt as Markdown text.",
)
STUCK_PARAMS = [
    Param(
        "tenant_id",
        "query",
        _UUID,
        "Admin keys: only this tenant's jobs (default: every tenant). A tenant key always sees "
        "its own tenant; another tenant's id is a 403.",
    ),
    Param(
        "limit",
        "query",
        {
            "type": "integer",
            "minimum": 1,
            "maximum": STUCK_LIMIT_MAX,
            "default": STUCK_LIMIT_DEFAULT,
        },
        "At most this many stuck entries, oldest first.",
    ),
]
JOB_ID = Param("job_id", "path", _UUID, "The job's id.")
TENANT_ID = Param("tenant_id", "path", _UUID, "The tenant's id.")
KEY_ID = Param("key_id", "path", _UUID, "The key's id.")
IDEMPOTENCY_KEY = Param(
    "Idempotency-Key",
    "header",
    {
        "type": "string",
        "minLength": 1,
        "maxLength": IDEMPOTENCY_KEY_MAX,
        "pattern": "^[!-~]+$",
    },
    "Your unique key for this job (visible ASCII, e.g. a UUID). The same key with the same "
    "body answers the same job (200); with a different body, 409.",
    required=True,
)


# -- validation --


@dataclass(frozen=True)
class _Validators:
    schema: JSONSchema  # held so that its id() is not reused while cached
    fast: Any
    full: Draft202012Validator


_VALIDATORS: dict[int, _Validators] = {}


def _validators(schema: JSONSchema) -> _Validators:
    cached = _VALIDATORS.get(id(schema))
    if cached is None or cached.schema is not schema:
        fast = jsonschema_rs.Draft202012Validator(schema, validate_formats=False)
        cached = _Validators(schema, fast, Draft202012Validator(schema))
        _VALIDATORS[id(schema)] = cached
    return cached


NUL_REASON = "must not contain the NUL character (U+0000)"


def _nul_fields(value: Any, where: str = "") -> Iterator[str]:
    """The paths of the strings (values or keys) in `value` that contain U+0000."""
    if isinstance(value, str):
        if "\x00" in value:
            yield where or "(body)"
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                yield _join(where, key)
            else:
                yield from _nul_fields(item, _join(where, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nul_fields(item, f"{where}[{index}]")


def validate_body(schema: JSONSchema, body: Mapping[str, Any]) -> None:
    """Check `body` against `schema`; a 422 problem listing every field at fault. No string may
    hold U+0000: PostgreSQL cannot store it in text, and no client means it."""
    nul = list(dict.fromkeys(_nul_fields(body)))
    if nul:
        raise Problem(
            "validation-error",
            f"Invalid fields: {', '.join(nul)}.",
            invalid_params=[{"name": name, "reason": NUL_REASON} for name in nul],
        )
    validators = _validators(schema)
    if validators.fast.is_valid(body):
        return
    errors = sorted(validators.full.iter_errors(body), key=lambda e: [str(p) for p in e.path])
    if not errors:
        return
    invalid: list[dict[str, str]] = []
    for error in errors:
        for name, reason in _describe(error):
            entry = {"name": name, "reason": reason}
            if entry not in invalid:
                invalid.append(entry)
    names = ", ".join(dict.fromkeys(e["name"] for e in invalid))
    raise Problem("validation-error", f"Invalid fields: {names}.", invalid_params=invalid)


def _path(parts: Any) -> str:
    name = ""
    for part in parts:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name


def _describe(error: ValidationError) -> list[tuple[str, str]]:
    where = _path(error.absolute_path)
    validator, instance, schema = error.validator, error.instance, error.schema
    if validator == "additionalProperties" and isinstance(instance, dict):
        known = set(schema.get("properties", {}))
        extras = sorted(k for k in instance if k not in known)
        return [(_join(where, k), "is not a known field") for k in extras]
    if validator == "required" and isinstance(instance, dict):
        missing = [k for k in schema.get("required", []) if k not in instance]
        return [(_join(where, k), "is required") for k in missing]
    if validator == "anyOf":  # our anyOf is always "<schema> or null": report the schema's error
        for sub in error.context or []:
            if isinstance(sub.schema, dict) and sub.schema.get("type") != "null":
                return _describe(sub)
    reasons = {
        "type": f"must be of type {schema.get('type')}",
        "maxLength": f"must be at most {schema.get('maxLength')} characters",
        "minLength": f"must be at least {schema.get('minLength')} characters",
        "enum": f"must be one of {', '.join(map(str, schema.get('enum', [])))}",
        "pattern": "must be an absolute http or https URL"
        if schema is not None and "Tt" in str(schema.get("pattern"))
        else f"must match {schema.get('pattern')}",
        "maxItems": f"must list at most {schema.get('maxItems')} items",
        "minItems": f"must list at least {schema.get('minItems')} items",
        "maxProperties": f"may hold at most {schema.get('maxProperties')} keys",
        "minimum": f"must be at least {schema.get('minimum')}",
        "maximum": f"must be at most {schema.get('maximum')}",
        "exclusiveMinimum": f"must be more than {schema.get('exclusiveMinimum')}",
        "uniqueItems": "must not repeat an item",
    }
    if validator == "propertyNames":
        return [(where or "body", f"keys must be 1 to {METADATA_KEY_MAX} characters")]
    return [(where or "body", reasons.get(str(validator), error.message))]


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def parse_time_field(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_datetime(value)
    except ValueError as error:
        raise Problem.parameter(name, str(error), slug="validation-error") from None
