"""Request bodies: one JSON object, with the model every endpoint needs."""

from typing import Any

import orjson

from domain.errors import InvalidRequest


def json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return body


def with_model(raw: bytes) -> dict[str, Any]:
    """The body, which must name a model."""
    body = json_object(raw)
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequest("you must provide a model parameter", param="model")
    return body
