"""The webhook routes' schemas, as data (endpoints, deliveries, attempts, health).

The same kind of objects as `api.schemas`, kept beside it so the webhook surface reads as one
piece: request bodies are JSON Schema checked by `api.schemas.validate_body`, parameters are
`Param`s, and `api.openapi` publishes both. Limits come from `ledger.endpoint`, which still
enforces the product rules itself (a 422 naming the field either way).
"""

from __future__ import annotations

from api.schemas import CURSOR, LIMIT, MIN_POSITION, REASON_MAX, JSONSchema, Param
from ledger.delivery import DeliveryState
from ledger.endpoint import (
    ALL_TYPES,
    DESCRIPTION_MAX,
    MAX_DELAY_SECONDS,
    MAX_GRACE_SECONDS,
    MAX_IN_FLIGHT,
    MAX_SCHEDULE_ENTRIES,
    MAX_TIMEOUT_SECONDS,
    URL_MAX,
    WEBHOOK_EVENT_TYPES,
    EndpointState,
)
from ledger.webhooks import DEFAULT_GRACE_SECONDS

TEST_MESSAGE_MAX = 200
TEST_MESSAGE_DEFAULT = "A test event from job-ledger."
HEALTH_WINDOW_DEFAULT = 24 * 3600
HEALTH_WINDOW_MIN = 60
HEALTH_WINDOW_MAX = 30 * 24 * 3600
EVENT_TYPE_CHOICES = [ALL_TYPES, *WEBHOOK_EVENT_TYPES]
DELIVERY_STATES = [str(s) for s in DeliveryState]
# Held deliveries arrived while the endpoint was disabled; dead-lettered ones ran out of tries.
RECOVERABLE_STATES = (str(DeliveryState.DEAD_LETTERED), str(DeliveryState.HELD))


def _nullable(schema: JSONSchema) -> JSONSchema:
    return {"anyOf": [schema, {"type": "null"}]}


_UUID = {"type": "string", "format": "uuid"}
_TIME = {"type": "string", "format": "date-time"}
_TIME_OR_NULL = {"type": ["string", "null"], "format": "date-time"}
_STRING_OR_NULL = {"type": ["string", "null"]}
_OBJECT_OR_NULL = {"type": ["object", "null"]}
_HEADERS = {"type": "object", "additionalProperties": {"type": "string"}}

# -- request bodies --

_URL = {
    "type": "string",
    "minLength": 1,
    "maxLength": URL_MAX,
    "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://",
    "description": "Where deliveries are POSTed. https; http and private or loopback addresses "
    "only where LEDGER_ALLOW_PRIVATE_TARGETS allows them. Checked against the target guard, "
    "also after DNS resolution.",
}
_EVENT_TYPES = {
    "type": "array",
    "minItems": 1,
    "maxItems": len(EVENT_TYPE_CHOICES),
    "uniqueItems": True,
    "items": {"type": "string", "enum": EVENT_TYPE_CHOICES},
    "description": 'The event types to deliver; `"*"` for all.',
}
_SETTINGS: dict[str, JSONSchema] = {
    "url": _URL,
    "event_types": _EVENT_TYPES,
    "description": _nullable({"type": "string", "maxLength": DESCRIPTION_MAX}),
    "timeout_seconds": _nullable(
        {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": MAX_TIMEOUT_SECONDS,
            "description": "Per-attempt timeout; null: the service default "
            "(LEDGER_WEBHOOK_TIMEOUT_SECONDS, 5).",
        }
    ),
    "retry_schedule": _nullable(
        {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_SCHEDULE_ENTRIES,
            "items": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_DELAY_SECONDS},
            "description": "Seconds to wait before each retry (n delays: n + 1 attempts); "
            "null: the service default (LEDGER_WEBHOOK_RETRY_SCHEDULE).",
        }
    ),
    "max_in_flight": _nullable(
        {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_IN_FLIGHT,
            "description": "Requests in flight to this endpoint at once; null: the service "
            "default (LEDGER_WEBHOOK_ENDPOINT_CONCURRENCY).",
        }
    ),
}

NEW_ENDPOINT: JSONSchema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["url", "event_types"],
    "properties": {
        **_SETTINGS,
        "payload_encryption": {
            "type": "boolean",
            "default": False,
            "description": "Encrypt each body with AES-256-GCM under a per-endpoint key, "
            "returned once in this answer as `payload_key`.",
        },
        "tenant_id": {
            **_UUID,
            "description": "Admin keys only, and then required: the tenant that owns the "
            "endpoint. A tenant key may leave it out or name its own tenant.",
        },
    },
}

ENDPOINT_CHANGES: JSONSchema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        **_SETTINGS,
        "disabled": {
            "type": "boolean",
            "description": "true disables the endpoint (new deliveries are held), false "
            "enables it again.",
        },
    },
}

ROTATE_SECRET: JSONSchema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "grace_seconds": {
            "type": "number",
            "minimum": 0,
            "maximum": MAX_GRACE_SECONDS,
            "default": DEFAULT_GRACE_SECONDS,
            "description": "How long the previous secret keeps signing beside the new one.",
        }
    },
}

TEST_EVENT: JSONSchema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "message": {
            "type": "string",
            "minLength": 1,
            "maxLength": TEST_MESSAGE_MAX,
            "default": TEST_MESSAGE_DEFAULT,
            "description": "Put into the test event's `data.message`.",
        }
    },
}

RECOVER: JSONSchema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["since"],
    "properties": {
        "since": {
            **_TIME,
            "description": "RFC 3339: retry the dead-lettered and held deliveries made since.",
        }
    },
}

DELIVERY_ACTION: JSONSchema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"reason": _nullable({"type": "string", "maxLength": REASON_MAX})},
}

# -- responses --

ENDPOINT: JSONSchema = {
    "type": "object",
    "required": [
        "id",
        "tenant_id",
        "url",
        "event_types",
        "description",
        "timeout_seconds",
        "retry_schedule",
        "max_in_flight",
        "state",
        "payload_encryption",
        "disabled_reason",
        "disabled_automatically",
        "last_error",
        "created_at",
        "updated_at",
        "version",
    ],
    "properties": {
        "id": _UUID,
        "tenant_id": {"type": "string"},
        "url": {"type": "string"},
        "event_types": {"type": "array", "items": {"type": "string"}},
        "description": _STRING_OR_NULL,
        "timeout_seconds": {"type": ["number", "null"]},
        "retry_schedule": {"type": ["array", "null"], "items": {"type": "number"}},
        "max_in_flight": {"type": ["integer", "null"]},
        "state": {
            "type": "string",
            "enum": [str(EndpointState.ACTIVE), str(EndpointState.DISABLED)],
        },
        "payload_encryption": {"type": "boolean"},
        "disabled_reason": _STRING_OR_NULL,
        "disabled_automatically": {"type": "boolean"},
        "last_error": {
            **_OBJECT_OR_NULL,
            "description": "The failure that disabled it automatically, if one did.",
        },
        "created_at": _TIME,
        "updated_at": _TIME,
        "version": {"type": "integer", "minimum": 1},
    },
}

_SECRET = {
    "type": "string",
    "pattern": "^whsec_[A-Za-z0-9+/]+={0,2}$",
    "description": "The signing secret (Standard Webhooks). Shown only in this answer.",
}

CREATED_ENDPOINT: JSONSchema = {
    **ENDPOINT,
    "required": [*ENDPOINT["required"], "secret"],
    "properties": {
        **ENDPOINT["properties"],
        "secret": _SECRET,
        "payload_key": {
            "type": "string",
            "description": "With `payload_encryption`: base64 of the 32-byte AES-256-GCM key "
            "that decrypts every body. Shown only in this answer.",
        },
    },
}

ROTATED_SECRET: JSONSchema = {
    **ENDPOINT,
    "required": [*ENDPOINT["required"], "secret", "previous_secret_expires_at"],
    "properties": {
        **ENDPOINT["properties"],
        "secret": {**_SECRET, "description": "The new signing secret. Shown only here."},
        "previous_secret_expires_at": {
            **_TIME,
            "description": "Until then the previous secret signs beside the new one.",
        },
    },
}

ENDPOINT_LIST: JSONSchema = {
    "type": "object",
    "required": ["endpoints", "next_cursor"],
    "properties": {
        "endpoints": {"type": "array", "items": ENDPOINT},
        "next_cursor": _STRING_OR_NULL,
    },
}

DELIVERY: JSONSchema = {
    "type": "object",
    "required": [
        "id",
        "webhook_id",
        "tenant_id",
        "endpoint_id",
        "event_type",
        "origin",
        "job_id",
        "source_event_id",
        "state",
        "hold_reason",
        "attempts",
        "next_attempt_at",
        "last_attempt",
        "created_at",
        "updated_at",
        "version",
    ],
    "properties": {
        "id": _UUID,
        "webhook_id": {"type": "string", "description": "The `webhook-id` header it is sent with."},
        "tenant_id": {"type": "string"},
        "endpoint_id": {"type": "string"},
        "event_type": {"type": "string"},
        "origin": {"type": "string", "enum": ["event", "test"]},
        "job_id": _STRING_OR_NULL,
        "source_event_id": _STRING_OR_NULL,
        "state": {"type": "string", "enum": DELIVERY_STATES},
        "hold_reason": _STRING_OR_NULL,
        "attempts": {"type": "integer", "minimum": 0},
        "next_attempt_at": _TIME_OR_NULL,
        "last_attempt": {
            **_OBJECT_OR_NULL,
            "description": "The latest attempt's number and receipt.",
        },
        "created_at": _TIME,
        "updated_at": _TIME,
        "version": {"type": "integer", "minimum": 1},
    },
}

DELIVERY_LIST: JSONSchema = {
    "type": "object",
    "required": ["deliveries", "next_cursor"],
    "properties": {
        "deliveries": {"type": "array", "items": DELIVERY},
        "next_cursor": _STRING_OR_NULL,
    },
}

RECEIPT: JSONSchema = {
    "type": "object",
    "description": "What the sender saw: `attempted_at`, `url`, `webhook_timestamp`, "
    "`status_code`, `latency_ms`, `response_headers`, `response_body` (an excerpt), "
    "`error_class` and `error`.",
    "properties": {
        "attempted_at": _TIME_OR_NULL,
        "url": _STRING_OR_NULL,
        "status_code": {"type": ["integer", "null"]},
        "latency_ms": {"type": ["number", "null"]},
        "response_headers": {"type": ["object", "null"]},
        "response_body": _STRING_OR_NULL,
        "error_class": _STRING_OR_NULL,
        "error": _STRING_OR_NULL,
    },
}

ATTEMPT: JSONSchema = {
    "type": "object",
    "required": [
        "attempt",
        "succeeded",
        "result_state",
        "next_attempt_at",
        "hold_reason",
        "occurred_at",
        "actor",
        "receipt",
    ],
    "properties": {
        "attempt": {"type": "integer", "minimum": 1},
        "succeeded": {"type": "boolean"},
        "result_state": {"type": "string", "enum": DELIVERY_STATES},
        "next_attempt_at": _TIME_OR_NULL,
        "hold_reason": _STRING_OR_NULL,
        "occurred_at": _TIME,
        "actor": {"type": "string"},
        "receipt": RECEIPT,
    },
}

DELIVERY_DETAIL: JSONSchema = {
    **DELIVERY,
    "required": [*DELIVERY["required"], "payload", "attempt_log"],
    "properties": {
        **DELIVERY["properties"],
        "payload": {
            "type": "object",
            "description": "The message body, as sent (before payload encryption).",
        },
        "attempt_log": {"type": "array", "items": ATTEMPT, "description": "Oldest first."},
    },
}

TEST_RESULT: JSONSchema = {
    "type": "object",
    "required": ["delivery", "succeeded", "request", "response"],
    "properties": {
        "delivery": {**DELIVERY, "description": "The test delivery after its one attempt."},
        "succeeded": {"type": "boolean", "description": "A 2xx came back within the timeout."},
        "request": {
            "type": "object",
            "required": ["method", "url", "headers", "body"],
            "description": "The request exactly as sent.",
            "properties": {
                "method": {"type": "string"},
                "url": {"type": "string"},
                "headers": _HEADERS,
                "body": {"type": "string"},
            },
        },
        "response": {
            "type": "object",
            "required": ["status_code", "headers", "body", "latency_ms", "error_class", "error"],
            "description": "What came back (the body: at most 4096 characters). `status_code` "
            "is null when nothing did; `error_class` and `error` say why the attempt failed.",
            "properties": {
                "status_code": {"type": ["integer", "null"]},
                "headers": _HEADERS,
                "body": _STRING_OR_NULL,
                "latency_ms": {"type": ["number", "null"]},
                "error_class": _STRING_OR_NULL,
                "error": _STRING_OR_NULL,
            },
        },
    },
}

RECOVERED: JSONSchema = {
    "type": "object",
    "required": ["endpoint_id", "since", "retried", "delivery_ids", "more"],
    "properties": {
        "endpoint_id": _UUID,
        "since": _TIME,
        "retried": {"type": "integer", "minimum": 0},
        "delivery_ids": {"type": "array", "items": _UUID},
        "more": {
            "type": "boolean",
            "description": "More remain past this call's limit: call again with the same "
            "`since` (those retried now are pending, so they are not retried twice).",
        },
    },
}

_NUMBER_OR_NULL = {"type": ["number", "null"]}

HEALTH_REPORT: JSONSchema = {
    "type": "object",
    "required": [
        "endpoint_id",
        "state",
        "endpoint_state",
        "window_seconds",
        "attempts",
        "succeeded",
        "success_rate",
        "latency_ms",
        "consecutive_failures",
        "failing_since",
        "consecutive_dead_letters",
        "dead_letters_total",
        "last_success_at",
        "last_failure_at",
        "last_error",
    ],
    "properties": {
        "endpoint_id": _UUID,
        "state": {"type": "string", "enum": ["healthy", "degraded", "failing", "disabled"]},
        "endpoint_state": {"type": "string"},
        "window_seconds": {"type": "number"},
        "attempts": {"type": "integer", "minimum": 0},
        "succeeded": {"type": "integer", "minimum": 0},
        "success_rate": _NUMBER_OR_NULL,
        "latency_ms": {
            "type": "object",
            "required": ["p50", "p95"],
            "properties": {"p50": _NUMBER_OR_NULL, "p95": _NUMBER_OR_NULL},
        },
        "consecutive_failures": {"type": "integer", "minimum": 0},
        "failing_since": _TIME_OR_NULL,
        "consecutive_dead_letters": {"type": "integer", "minimum": 0},
        "dead_letters_total": {"type": "integer", "minimum": 0},
        "last_success_at": _TIME_OR_NULL,
        "last_failure_at": _TIME_OR_NULL,
        "last_error": _OBJECT_OR_NULL,
    },
}

# -- parameters --

ENDPOINT_ID = Param("endpoint_id", "path", _UUID, "The endpoint's id.")
DELIVERY_ID = Param("delivery_id", "path", _UUID, "The delivery's id.")
TENANT_FILTER = Param(
    "tenant_id",
    "query",
    _UUID,
    "Admin keys: only this tenant's (default: every tenant). A tenant key always sees its own "
    "tenant; another tenant's id is a 403.",
)
DELIVERY_STATE = Param(
    "state",
    "query",
    {"type": "string", "enum": DELIVERY_STATES},
    "Only deliveries in this state (`dead_lettered`: the dead letters).",
)
# Query parameters only (a route's path ids are parsed apart, then listed in the document).
LIST_ENDPOINTS_PARAMS = [TENANT_FILTER, LIMIT, CURSOR, MIN_POSITION]
ENDPOINT_DELIVERIES_PARAMS = [DELIVERY_STATE, LIMIT, CURSOR, MIN_POSITION]
LIST_DELIVERIES_PARAMS = [
    TENANT_FILTER,
    DELIVERY_STATE,
    Param("endpoint_id", "query", _UUID, "Only deliveries to this endpoint."),
    Param("job_id", "query", _UUID, "Only deliveries about this job."),
    LIMIT,
    CURSOR,
    MIN_POSITION,
]
HEALTH_PARAMS = [
    Param(
        "window_seconds",
        "query",
        {
            "type": "integer",
            "minimum": HEALTH_WINDOW_MIN,
            "maximum": HEALTH_WINDOW_MAX,
            "default": HEALTH_WINDOW_DEFAULT,
        },
        "The recent window the success rate and latency are computed over.",
    ),
]
