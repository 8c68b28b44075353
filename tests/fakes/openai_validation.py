"""Request validation for the fake OpenAI upstream, with OpenAI's error wording.

Each check raises :class:`Reject` carrying the status, message, ``param`` and
``code`` that OpenAI's API returns for the same mistake (e.g. a missing
``messages`` is 400 ``missing_required_parameter`` with ``param: "messages"``).
"""

from __future__ import annotations

from typing import Any

from .openai_wire import DEFAULT_EMBEDDING_DIMENSIONS, VALID_ROLES


class Reject(Exception):
    """A 4xx answer in OpenAI's error shape, raised from validation helpers."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_min(body: dict[str, Any], name: str, minimum: int, maximum: int | None = None) -> None:
    value = body.get(name)
    if value is None:
        return
    if not _is_int(value):
        raise Reject(
            400,
            f"Invalid type for '{name}': expected an integer, but got {type(value).__name__} instead.",
            param=name,
            code="invalid_type",
        )
    if value < minimum:
        raise Reject(
            400,
            f"Invalid '{name}': integer below minimum value. Expected a value >= {minimum}, but got {value} instead.",
            param=name,
            code="integer_below_min_value",
        )
    if maximum is not None and value > maximum:
        raise Reject(
            400,
            f"Invalid '{name}': integer above maximum value. Expected a value <= {maximum}, but got {value} instead.",
            param=name,
            code="integer_above_max_value",
        )


def _require_model(body: dict[str, Any]) -> None:
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise Reject(400, "you must provide a model parameter")


def validate_chat(body: dict[str, Any]) -> None:
    _require_model(body)
    if "messages" not in body:
        raise Reject(
            400, "Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter"
        )
    messages = body["messages"]
    if not isinstance(messages, list):
        raise Reject(
            400, "Invalid type for 'messages': expected an array of objects.", param="messages", code="invalid_type"
        )
    if not messages:
        raise Reject(
            400,
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            param="messages",
            code="empty_array",
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise Reject(
                400,
                f"Invalid type for 'messages[{i}]': expected an object.",
                param=f"messages[{i}]",
                code="invalid_type",
            )
        if "role" not in message:
            raise Reject(
                400,
                f"Missing required parameter: 'messages[{i}].role'.",
                param=f"messages[{i}].role",
                code="missing_required_parameter",
            )
        if message["role"] not in VALID_ROLES:
            raise Reject(
                400,
                f"Invalid value: '{message['role']}'. Supported values are: "
                + ", ".join(f"'{r}'" for r in VALID_ROLES)
                + ".",
                param=f"messages[{i}].role",
                code="invalid_value",
            )
    _check_min(body, "n", 1, 128)
    _check_min(body, "max_tokens", 1)
    _check_min(body, "max_completion_tokens", 1)
    stop = body.get("stop")
    if (
        stop is not None
        and not isinstance(stop, str)
        and not (isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop))
    ):
        raise Reject(
            400,
            "Invalid 'stop': expected a string or an array of at most 4 strings.",
            param="stop",
            code="invalid_type",
        )
    if body.get("stream") not in (None, True, False):
        raise Reject(400, "Invalid type for 'stream': expected a boolean.", param="stream", code="invalid_type")
    if body.get("stream_options") is not None and body.get("stream") is not True:
        raise Reject(
            400,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
            code="invalid_value",
        )
    if body.get("tools") is not None and not isinstance(body["tools"], list):
        raise Reject(400, "Invalid type for 'tools': expected an array.", param="tools", code="invalid_type")


def validate_embeddings(body: dict[str, Any]) -> tuple[list[str | list[int]], int, str]:
    _require_model(body)
    if "input" not in body:
        raise Reject(400, "Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
    raw = body["input"]
    if isinstance(raw, str):
        inputs: list[str | list[int]] = [raw]
    elif isinstance(raw, list) and raw and all(_is_int(x) for x in raw):
        inputs = [raw]
    elif (
        isinstance(raw, list)
        and raw
        and all(isinstance(x, str) or (isinstance(x, list) and x and all(_is_int(t) for t in x)) for x in raw)
    ):
        inputs = list(raw)
    else:
        raise Reject(
            400,
            "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
            param="input",
        )
    _check_min(body, "dimensions", 1, 3072)  # OpenAI's largest embedding; the fake builds the vector in memory
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise Reject(
            400,
            f"Invalid value: '{encoding}'. Supported values are: 'float' and 'base64'.",
            param="encoding_format",
            code="invalid_value",
        )
    return inputs, body.get("dimensions") or DEFAULT_EMBEDDING_DIMENSIONS, encoding
