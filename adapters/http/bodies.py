"""Request bodies: one JSON object, with the model every endpoint needs.

A body is refused (400) unless it can be forwarded: orjson reads JSON nested up to
1,024 levels but writes at most 254, so a deeper body would fail only when the gateway
serialises it for the provider, after its hold was placed (a 500)."""

from typing import Any

import orjson

from domain.errors import InvalidRequest

MAX_DEPTH = 254  # the deepest nesting orjson.dumps writes


def json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and not _writable(body):
        raise InvalidRequest(f"the request body is nested more than {MAX_DEPTH} levels deep")
    return body


def _writable(body: dict[str, Any]) -> bool:
    """orjson can serialise it again (a body with few brackets cannot be too deep: not checked)."""
    try:
        orjson.dumps(body)
    except TypeError:
        return False
    return True


def with_model(raw: bytes) -> dict[str, Any]:
    """The body, which must name a model."""
    body = json_object(raw)
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequest("you must provide a model parameter", param="model")
    return body
