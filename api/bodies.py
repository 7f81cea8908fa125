"""Reading a request's JSON body: media type, UTF-8, JSON syntax, a JSON object (else 4xx).

The body was already size-checked and buffered by `api.limits.BodyLimit`. Parsing is orjson's,
which refuses what is not strictly JSON: NaN, lone surrogate escapes, a byte-order mark, nesting
deeper than 1024. Schema and product rules are checked afterwards (`api.schemas`, `NewJob`).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from api.problems import Problem


def is_json_media_type(content_type: str | None) -> bool:
    if not content_type:
        return False
    media_type, _, params = content_type.partition(";")
    media_type = media_type.strip().lower()
    if media_type != "application/json" and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        return False
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return False
    return True


async def read_json(request: Request, *, required: bool) -> dict[str, Any] | None:
    """The body as a JSON object; None when it is optional and absent."""
    body = await request.body()
    if not body:
        if required:
            raise Problem.parameter("body", "a JSON object is required", slug="malformed-request")
        return None
    content_type = request.headers.get("content-type")
    if not is_json_media_type(content_type):
        raise Problem(
            "unsupported-media-type",
            f"Send the body as `Content-Type: application/json` (UTF-8), not {content_type!r}.",
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise Problem(
            "malformed-request",
            f"The body is not valid UTF-8 (byte {error.start}).",
            invalid_params=[{"name": "body", "reason": "is not valid UTF-8"}],
        ) from None
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise Problem(
            "malformed-request",
            f"The body is not valid JSON: {error}.",
            invalid_params=[{"name": "body", "reason": f"is not valid JSON: {error}"}],
        ) from None
    if not isinstance(data, dict):
        raise Problem.parameter(
            "body", f"must be a JSON object, not {_json_type(data)}", slug="malformed-request"
        )
    return data


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array"
