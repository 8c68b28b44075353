"""The OpenAPI schemas of ``POST /v1/responses`` (adapters/http/schemas.py puts them in the
document with the other hot routes).

Invariant, as for the other hot routes: a body the request schema accepts passes the
gateway's own checks (adapters/http/responses_translate.py, then the chat parser), and a
body they refuse is outside it. The Responses translation refuses every top-level field it
does not translate, so the request schema allows no others.
"""

from typing import Any

from domain.attribution import MAX_METADATA_KEY_CHARS, MAX_METADATA_PAIRS, MAX_METADATA_VALUE_CHARS, MAX_USER_CHARS
from domain.bounds import MAX_TOKENS

_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _object(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties, "additionalProperties": False}


_TEXT = {"type": "string"}
_NAME = {"type": "string", "minLength": 1}
_INPUT_TEXT = _object(["type", "text"], {"type": {"enum": ["input_text", "output_text"]}, "text": _TEXT})
_INPUT_IMAGE = _object(
    ["type", "image_url"],
    {
        "type": {"const": "input_image"},
        "image_url": {"type": "string", "minLength": 1, "description": "A URL or a data URL (base64)."},
        "detail": _nullable({"enum": ["auto", "low", "high", "original"]}),
    },
)
_INPUT_FILE = _object(
    ["type", "file_data", "filename"],
    {
        "type": {"const": "input_file"},
        "file_data": {"type": "string", "minLength": 1, "description": "The file as a data URL (base64)."},
        "filename": _NAME,
    },
)
_REFUSAL = _object(["type", "refusal"], {"type": {"const": "refusal"}, "refusal": _TEXT})
_ROLE_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "type": {"const": "message"},
        "role": {"enum": ["user", "system", "developer"]},
        "content": {"anyOf": [_TEXT, {"type": "array", "items": {"anyOf": [_INPUT_TEXT, _INPUT_IMAGE, _INPUT_FILE]}}]},
    },
}
_ASSISTANT_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "type": {"const": "message"},
        "role": {"const": "assistant"},
        "content": {"anyOf": [_TEXT, {"type": "array", "items": {"anyOf": [_INPUT_TEXT, _REFUSAL]}}]},
    },
}
_FUNCTION_CALL = {
    "type": "object",
    "required": ["type", "call_id", "name", "arguments"],
    "properties": {
        "type": {"const": "function_call"},
        "call_id": _NAME,
        "name": _NAME,
        "arguments": {"type": "string", "description": "The call's arguments, JSON text."},
    },
}
_FUNCTION_CALL_OUTPUT = {
    "type": "object",
    "required": ["type", "call_id", "output"],
    "properties": {
        "type": {"const": "function_call_output"},
        "call_id": _NAME,
        "output": {
            "anyOf": [
                _TEXT,
                {"type": "array", "items": _object(["type", "text"], {"type": {"const": "input_text"}, "text": _TEXT})},
            ]
        },
    },
}
_REASONING = {
    "type": "object",
    "required": ["type"],
    "description": "An earlier turn's reasoning: accepted and left out (chat has no equivalent).",
    "properties": {"type": {"const": "reasoning"}},
}
_CONVERSATION_ITEM = {"anyOf": [_ROLE_MESSAGE, _ASSISTANT_MESSAGE, _FUNCTION_CALL, _FUNCTION_CALL_OUTPUT]}

_FUNCTION_TOOL = _object(
    ["type", "name"],
    {
        "type": {"const": "function"},
        "name": _NAME,
        "description": _nullable(_TEXT),
        "parameters": _nullable({"type": "object"}),
        "strict": _nullable({"type": "boolean"}),
        "defer_loading": _nullable({"const": False}),
    },
)
_TEXT_FORMAT = {
    "anyOf": [
        _object(["type"], {"type": {"enum": ["text", "json_object"]}}),
        {
            "type": "object",
            "required": ["type", "name", "schema"],
            "properties": {
                "type": {"const": "json_schema"},
                "name": _NAME,
                "schema": {"type": "object"},
                "description": _nullable(_TEXT),
                "strict": _nullable({"type": "boolean"}),
            },
        },
    ]
}
_SUMMARY = _nullable({"enum": ["auto", "concise", "detailed"]})

RESPONSES_REQUEST = {
    "type": "object",
    "description": "OpenAI's Responses request, translated to a chat completion and billed as one (see "
    "adapters/http/responses_translate.py for what is translated, accepted and refused). Other fields, "
    "built-in tools and other item types are refused with a 400 naming them.",
    "required": ["model", "input"],
    "properties": {
        "model": {"type": "string", "minLength": 1, "description": "A model id ('provider/model') or an alias."},
        "input": {
            "anyOf": [
                {"type": "string", "minLength": 1},
                {
                    "type": "array",
                    "minItems": 1,
                    "items": {"anyOf": [_CONVERSATION_ITEM, _REASONING]},
                    "contains": _CONVERSATION_ITEM,
                },
            ]
        },
        "instructions": _nullable(_TEXT),
        "max_output_tokens": _nullable({"type": "integer", "minimum": 1, "maximum": MAX_TOKENS}),
        "temperature": _nullable({"type": "number"}),
        "top_p": _nullable({"type": "number"}),
        "tools": _nullable({"type": "array", "items": _FUNCTION_TOOL}),
        "tool_choice": _nullable(
            {
                "anyOf": [
                    {"enum": ["auto", "none", "required"]},
                    {
                        "type": "object",
                        "required": ["type", "name"],
                        "properties": {"type": {"const": "function"}, "name": _NAME},
                    },
                ]
            }
        ),
        "parallel_tool_calls": _nullable({"type": "boolean"}),
        "text": _nullable(
            _object(
                [], {"format": _nullable(_TEXT_FORMAT), "verbosity": _nullable({"enum": ["low", "medium", "high"]})}
            )
        ),
        "reasoning": _nullable(
            _object(
                [],
                {
                    "effort": _nullable({"type": "string", "minLength": 1, "examples": ["low", "medium", "high"]}),
                    "summary": _SUMMARY,
                    "generate_summary": _SUMMARY,
                },
            )
        ),
        "stream": _nullable({"type": "boolean"}),
        "stream_options": _nullable(_object([], {"include_obfuscation": {"type": "boolean"}})),
        "store": _nullable(
            {
                "type": "boolean",
                "description": "Keep the response (default true) when the gateway stores responses "
                "(TALLYHUB_RESPONSES_STORE=on); otherwise answered with store: false.",
            }
        ),
        "previous_response_id": _nullable(
            {"type": "string", "minLength": 1, "description": "Continue a stored response (storage on)."}
        ),
        "user": _nullable({"type": "string", "maxLength": MAX_USER_CHARS}),
        "safety_identifier": _nullable({"type": "string", "maxLength": MAX_USER_CHARS}),
        "metadata": _nullable(
            {
                "type": "object",
                "description": "The request's attribution (kept by Tallyhub, not sent to the provider).",
                "maxProperties": MAX_METADATA_PAIRS,
                "propertyNames": {"maxLength": MAX_METADATA_KEY_CHARS},
                "additionalProperties": {"type": "string", "maxLength": MAX_METADATA_VALUE_CHARS},
            }
        ),
        "service_tier": _nullable(_TEXT),
        "prompt_cache_key": _nullable(_TEXT),
        "prompt_cache_retention": _nullable({"enum": ["in_memory", "24h"]}),
        "max_tool_calls": _nullable({"type": "integer", "minimum": 1, "maximum": MAX_TOKENS}),
        "background": _nullable({"const": False}),
        "truncation": _nullable({"const": "disabled"}),
        "include": _nullable({"type": "array", "items": {"const": "reasoning.encrypted_content"}}),
        "top_logprobs": _nullable({"const": 0}),
    },
    "additionalProperties": False,
}

_USAGE = {
    "type": "object",
    "description": "Token counts in Responses' terms, with Tallyhub's receipt (cost, cost_decimal, "
    "cost_nanocredits, price_book_version, usage_source, ...).",
    "properties": {
        "input_tokens": {"type": "integer"},
        "input_tokens_details": {
            "type": "object",
            "properties": {"cached_tokens": {"type": "integer"}, "cache_write_tokens": {"type": "integer"}},
        },
        "output_tokens": {"type": "integer"},
        "output_tokens_details": {"type": "object", "properties": {"reasoning_tokens": {"type": "integer"}}},
        "total_tokens": {"type": "integer"},
        "cost": {"type": "number", "description": "The charge in credits, a JSON number for display."},
        "cost_decimal": {"type": "string", "description": "The charge in credits (decimal text, exact)."},
        "cost_nanocredits": {"type": "integer", "description": "The charge in nanocredits."},
        "price_book_version": {"type": "integer"},
        "usage_source": {"type": "string"},
    },
    "additionalProperties": True,
}

RESPONSE = {
    "type": "object",
    "description": "A Response: the provider's answer as output items (reasoning, message, function_call).",
    "required": ["id", "object", "created_at", "status", "model", "output"],
    "properties": {
        "id": {"type": "string", "description": "resp_<the request id, hex>"},
        "object": {"const": "response"},
        "created_at": {"type": "integer"},
        "status": {"enum": ["completed", "incomplete", "failed", "in_progress"]},
        "incomplete_details": _nullable(
            {"type": "object", "properties": {"reason": {"enum": ["max_output_tokens", "content_filter"]}}}
        ),
        "error": _nullable({"type": "object"}),
        "model": {"type": "string", "description": "The model as the caller named it."},
        "output": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type", "id"],
                "properties": {
                    "type": {"enum": ["message", "reasoning", "function_call"]},
                    "id": {"type": "string"},
                    "call_id": {"type": "string"},
                },
                "additionalProperties": True,
            },
        },
        "store": {"type": "boolean", "description": "Whether the gateway kept the response."},
        "usage": _nullable(_ref("ResponsesUsage")),
    },
    "additionalProperties": True,
}

RESPONSE_STREAM_EVENT = {
    "type": "object",
    "description": "One event of a Responses stream (`event: <type>` then `data: <event>`), numbered by "
    "sequence_number: response.created, response.in_progress, then per output item "
    "response.output_item.added, its parts and deltas, response.output_item.done; then "
    "response.completed (or response.incomplete) carrying the whole response with its usage and "
    "Tallyhub's charge; a stream the provider breaks ends with response.failed.",
    "required": ["type", "sequence_number"],
    "properties": {
        "type": {
            "enum": [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.output_item.done",
                "response.content_part.added",
                "response.content_part.done",
                "response.output_text.delta",
                "response.output_text.done",
                "response.refusal.delta",
                "response.refusal.done",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.reasoning_summary_part.added",
                "response.reasoning_summary_part.done",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.done",
                "response.completed",
                "response.incomplete",
                "response.failed",
            ]
        },
        "sequence_number": {"type": "integer"},
        "response": _ref("Response"),
        "output_index": {"type": "integer"},
        "item": {"type": "object"},
        "delta": {"type": "string"},
    },
    "additionalProperties": True,
}

RESPONSES_COMPONENTS: dict[str, dict[str, Any]] = {
    "ResponsesRequest": RESPONSES_REQUEST,
    "Response": RESPONSE,
    "ResponsesUsage": _USAGE,
    "ResponseStreamEvent": RESPONSE_STREAM_EVENT,
}
