"""The OpenAPI request and error schemas of the hot routes.

``POST /v1/chat/completions``, ``/v1/messages`` and ``/v1/embeddings`` are served by the
hot path (adapters/http/hot_path.py, hot_routes.py), which reads the raw body and
parses it by hand: FastAPI never sees their bodies, so their routes in the OpenAPI
document said nothing about them. ``document_hot_routes(app)`` attaches what the parsers
(adapters/http/chat_request.py, embeddings.py, messages_translate.py) actually accept to
those routes, plus the answers they give (the 200 documents, the streams' events and the
error bodies), so ``/openapi.json`` — and the ``/docs`` page over it, and any client or
fuzzer generated from it — describes the real API.

Invariant: a body these schemas accept passes the gateway's own checks, and a body the
gateway's checks refuse is outside them (fields the gateway passes through unchecked to
the provider are described loosely: the provider decides). Chat completions and messages
allow further top-level fields (passed through, or dropped for messages).
"""

from typing import Any

from fastapi import FastAPI

from adapters.http.chat_request import MAX_CHOICES
from adapters.http.responses_schemas import RESPONSES_COMPONENTS
from adapters.providers.anthropic_request import IMAGE_MEDIA_TYPES
from domain.bounds import MAX_TOKENS

_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


_MODEL = {"type": "string", "minLength": 1, "description": "A model id ('provider/model') or an alias."}
_OUTPUT_TOKENS = {"type": "integer", "minimum": 1, "maximum": MAX_TOKENS}
_TOKEN_ID = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}

# -- chat completions (OpenAI) ---------------------------------------------------------

_CHAT_PART = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "description": "text, image_url, input_audio, file, ..."},
        "text": {"type": "string"},
        "image_url": {"type": "object", "properties": {"url": {"type": "string"}, "detail": {"type": "string"}}},
    },
    "additionalProperties": True,
}

_CHAT_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"type": "string", "description": "system, developer, user, assistant or tool"},
        "content": {
            "anyOf": [{"type": "string"}, {"type": "array", "items": _ref("ChatContentPart")}, {"type": "null"}]
        },
        "name": {"type": "string"},
        "tool_calls": {"type": "array", "items": {"type": "object"}},
        "tool_call_id": {"type": "string"},
    },
    "additionalProperties": True,
}

_CHAT_TOOL = {
    "type": "object",
    "required": ["type", "function"],
    "properties": {
        "type": {"type": "string", "enum": ["function"]},
        "function": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "description": {"type": "string"},
                "parameters": {"type": "object"},
                "strict": {"type": "boolean"},
            },
        },
    },
}

_CHAT_REQUEST = {
    "type": "object",
    "description": "OpenAI's chat-completions request. Only the fields below are checked by Tallyhub; "
    "every other field passes through to the provider as sent.",
    "required": ["model", "messages"],
    "properties": {
        "model": _MODEL,
        "messages": {"type": "array", "minItems": 1, "items": _ref("ChatMessage")},
        "stream": _nullable({"type": "boolean"}),
        "stream_options": _nullable(
            {
                "type": "object",
                "description": "Only with stream: true. include_usage: true adds a final chunk with the usage "
                "and Tallyhub's charge.",
                "properties": {"include_usage": {"type": "boolean"}},
            }
        ),
        "n": _nullable({"type": "integer", "minimum": 1, "maximum": MAX_CHOICES}),
        "max_tokens": _nullable(_OUTPUT_TOKENS),
        "max_completion_tokens": _nullable(_OUTPUT_TOKENS),
        "tools": {"type": "array", "items": _ref("ChatTool")},
        "tool_choice": {"anyOf": [{"type": "string"}, {"type": "object"}]},
        "temperature": {"type": "number"},
        "top_p": {"type": "number"},
        "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
        "user": {"type": "string"},
        "response_format": {"type": "object"},
    },
    # stream_options (not null) needs stream: true
    "dependentSchemas": {
        "stream_options": {
            "anyOf": [
                {"properties": {"stream_options": {"type": "null"}}},
                {"properties": {"stream": {"const": True}}, "required": ["stream"]},
            ]
        }
    },
    "additionalProperties": True,
}

# -- messages (Anthropic) --------------------------------------------------------------

_TEXT_BLOCK = {
    "type": "object",
    "required": ["type", "text"],
    "properties": {"type": {"const": "text"}, "text": {"type": "string", "minLength": 1}},
}
_IMAGE_BLOCK = {
    "type": "object",
    "required": ["type", "source"],
    "properties": {
        "type": {"const": "image"},
        "source": {
            "oneOf": [
                {
                    "type": "object",
                    "required": ["type", "media_type", "data"],
                    "properties": {
                        "type": {"const": "base64"},
                        "media_type": {"enum": list(IMAGE_MEDIA_TYPES)},
                        "data": {"type": "string", "minLength": 1},
                    },
                },
                {
                    "type": "object",
                    "required": ["type", "url"],
                    "properties": {"type": {"const": "url"}, "url": {"type": "string", "minLength": 1}},
                },
            ]
        },
    },
}
_DOCUMENT_BLOCK = {
    "type": "object",
    "required": ["type", "source"],
    "properties": {
        "type": {"const": "document"},
        "title": {"type": "string"},
        "source": {
            "type": "object",
            "required": ["type", "media_type", "data"],
            "properties": {
                "type": {"const": "base64"},
                "media_type": {"const": "application/pdf"},
                "data": {"type": "string", "minLength": 1},
            },
        },
    },
}
_TOOL_USE_BLOCK = {
    "type": "object",
    "required": ["type", "id", "name", "input"],
    "properties": {
        "type": {"const": "tool_use"},
        "id": {"type": "string", "minLength": 1},
        "name": {"type": "string", "minLength": 1},
        "input": {"type": "object"},
    },
}
_TOOL_RESULT_BLOCK = {
    "type": "object",
    "required": ["type", "tool_use_id"],
    "properties": {
        "type": {"const": "tool_result"},
        "tool_use_id": {"type": "string", "minLength": 1},
        "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": _TEXT_BLOCK}, {"type": "null"}]},
        "is_error": {"type": "boolean"},
    },
}
_THINKING_BLOCK = {
    "description": "An earlier turn's thinking, sent back unchanged (to the chat body's thinking_blocks).",
    "oneOf": [
        {
            "type": "object",
            "required": ["type", "thinking", "signature"],
            "properties": {
                "type": {"const": "thinking"},
                "thinking": {"type": "string"},
                "signature": {"type": "string"},
            },
        },
        {
            "type": "object",
            "required": ["type", "data"],
            "properties": {"type": {"const": "redacted_thinking"}, "data": {"type": "string"}},
        },
    ],
}

_MESSAGES_MESSAGE = {
    "oneOf": [
        {
            "type": "object",
            "required": ["role", "content"],
            "properties": {
                "role": {"const": "user"},
                "content": {
                    "anyOf": [
                        {"type": "string"},
                        {
                            "type": "array",
                            "minItems": 1,
                            "items": {"anyOf": [_TEXT_BLOCK, _IMAGE_BLOCK, _DOCUMENT_BLOCK, _TOOL_RESULT_BLOCK]},
                        },
                    ]
                },
            },
        },
        {
            "type": "object",
            "required": ["role", "content"],
            "properties": {
                "role": {"const": "assistant"},
                "content": {
                    "anyOf": [
                        {"type": "string"},
                        # a turn of thinking blocks and nothing else says nothing: it is left out
                        {
                            "type": "array",
                            "items": {"anyOf": [_TEXT_BLOCK, _TOOL_USE_BLOCK, _THINKING_BLOCK]},
                            "contains": {"anyOf": [_TEXT_BLOCK, _TOOL_USE_BLOCK]},
                        },
                    ]
                },
            },
        },
    ],
}

_MESSAGES_TOOL = {
    "type": "object",
    "required": ["name", "input_schema"],
    "properties": {
        "type": {"const": "custom"},
        "name": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "input_schema": {"type": "object"},
        "strict": {"type": "boolean"},
    },
}

_MESSAGES_REQUEST = {
    "type": "object",
    "description": "Anthropic's Messages request, translated to a chat completion (see "
    "adapters/http/messages_translate.py). Other top-level fields are dropped.",
    "required": ["model", "max_tokens", "messages"],
    "properties": {
        "model": _MODEL,
        "max_tokens": _OUTPUT_TOKENS,
        "messages": {"type": "array", "minItems": 1, "items": _ref("AnthropicMessage")},
        "system": {"anyOf": [{"type": "string"}, {"type": "array", "items": _TEXT_BLOCK}, {"type": "null"}]},
        "stream": _nullable({"type": "boolean"}),
        "temperature": _nullable({"type": "number"}),
        "top_p": _nullable({"type": "number"}),
        "top_k": {"type": "integer"},
        "stop_sequences": _nullable({"type": "array", "items": {"type": "string"}}),
        "tools": _nullable({"type": "array", "items": _ref("AnthropicTool")}),
        "tool_choice": {
            "anyOf": [
                {
                    "type": "object",
                    "required": ["type"],
                    "properties": {
                        "type": {"enum": ["auto", "any", "none"]},
                        "disable_parallel_tool_use": {"type": "boolean"},
                    },
                },
                {
                    "type": "object",
                    "required": ["type", "name"],
                    "properties": {
                        "type": {"const": "tool"},
                        "name": {"type": "string", "minLength": 1},
                        "disable_parallel_tool_use": {"type": "boolean"},
                    },
                },
            ]
        },
        "metadata": _nullable({"type": "object", "properties": {"user_id": {"type": "string"}}}),
        "thinking": {"type": "object"},
        "mcp_servers": {"type": "array", "maxItems": 0, "description": "Not available through Tallyhub."},
    },
    "additionalProperties": True,
}

_COUNT_TOKENS_REQUEST = {
    **_MESSAGES_REQUEST,
    "description": "A Messages request to count the input tokens of (Anthropic's count_tokens): max_tokens "
    "is not needed (and, like stream, ignored); checked as /v1/messages checks it.",
    "required": ["model", "messages"],
}
_TOKENS_COUNT = {
    "type": "object",
    "required": ["input_tokens"],
    "properties": {
        "input_tokens": {"type": "integer", "minimum": 0},
        "estimated": {
            "const": True,
            "description": "Present when the gateway estimated the count (a model of a provider that does not "
            "count tokens); absent for the provider's own count.",
        },
    },
}

# -- embeddings (OpenAI) ---------------------------------------------------------------

_EMBEDDINGS_REQUEST = {
    "type": "object",
    "description": "OpenAI's embeddings request; other fields (encoding_format, dimensions, user) pass "
    "through to the provider.",
    "required": ["model", "input"],
    "properties": {
        "model": _MODEL,
        "input": {
            "anyOf": [
                {"type": "string"},
                {
                    "type": "array",
                    "minItems": 1,
                    "items": {"anyOf": [{"type": "string"}, _TOKEN_ID, {"type": "array", "items": _TOKEN_ID}]},
                },
            ]
        },
        "encoding_format": {"type": "string", "enum": ["float", "base64"]},
        "dimensions": {"type": "integer", "minimum": 1},
        "user": {"type": "string"},
    },
    "additionalProperties": True,
}

# -- answers ---------------------------------------------------------------------------
# What a 200 holds. A plain answer is the provider's own document as it sent it (passed
# through, so further fields may appear); a stream's events are described by the chunk and
# event schemas, one per ``data:`` line.

_RECEIPT_USAGE = {
    "cost": {
        "type": "number",
        "description": "Tallyhub's charge in credits as a JSON number (as OpenRouter's usage.cost), for display: "
        "the nearest double; the exact charge is cost_decimal or cost_nanocredits.",
    },
    "cost_decimal": {"type": "string", "description": "Tallyhub's charge in credits (decimal text, exact)."},
    "cost_nanocredits": {"type": "integer", "description": "Tallyhub's charge in nanocredits."},
    "price_book_version": {"type": "integer"},
    "usage_source": {"type": "string", "description": "provider (its own count) or estimate."},
    "price_missing": {"type": "boolean", "description": "true when the model had no price: charged 0."},
}

_OPENAI_USAGE = {
    "type": "object",
    "description": "Token counts; in a stream's last chunk also Tallyhub's receipt (cost, cost_nanocredits, ...).",
    "properties": {
        "prompt_tokens": {"type": "integer"},
        "completion_tokens": {"type": "integer"},
        "total_tokens": {"type": "integer"},
        "prompt_tokens_details": {"type": "object"},
        "completion_tokens_details": {"type": "object"},
        **_RECEIPT_USAGE,
    },
    "additionalProperties": True,
}

_TOOL_CALL = {
    "type": "object",
    "properties": {
        "index": {"type": "integer"},
        "id": {"type": "string"},
        "type": {"type": "string"},
        "function": {"type": "object", "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}}},
    },
    "additionalProperties": True,
}

_CHAT_COMPLETION = {
    "type": "object",
    "description": "The provider's chat completion as it sent it; Tallyhub's charge is in the "
    "x-tallyhub-charge headers.",
    "required": ["choices"],
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string", "examples": ["chat.completion"]},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "index": {"type": "integer"},
                    "message": {
                        "type": "object",
                        "properties": {
                            "role": {"type": "string"},
                            "content": {"type": ["string", "null"]},
                            "refusal": {"type": ["string", "null"]},
                            "tool_calls": {"type": "array", "items": _ref("ToolCall")},
                        },
                        "additionalProperties": True,
                    },
                    "finish_reason": {"type": ["string", "null"]},
                    "logprobs": {},
                },
                "additionalProperties": True,
            },
        },
        "usage": _ref("OpenAIUsage"),
        "system_fingerprint": {"type": ["string", "null"]},
    },
    "additionalProperties": True,
}

_CHAT_CHUNK = {
    "type": "object",
    "description": "One event of a chat stream (`data: <chunk>`), as the provider sent it. The last chunk "
    "carries the usage with Tallyhub's receipt (cost, cost_nanocredits, price_book_version, usage_source); "
    'then `data: [DONE]`. A stream the provider broke ends with `data: {"error": {...}}` '
    "(code upstream_stream_broken) and no [DONE].",
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string", "examples": ["chat.completion.chunk"]},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "index": {"type": "integer"},
                    "delta": {
                        "type": "object",
                        "properties": {
                            "role": {"type": "string"},
                            "content": {"type": ["string", "null"]},
                            "tool_calls": {"type": "array", "items": _ref("ToolCall")},
                        },
                        "additionalProperties": True,
                    },
                    "finish_reason": {"type": ["string", "null"]},
                },
                "additionalProperties": True,
            },
        },
        "usage": {"anyOf": [_ref("OpenAIUsage"), {"type": "null"}]},
    },
    "additionalProperties": True,
}

_TALLYHUB_RECEIPT = {
    "type": "object",
    "description": "Tallyhub's charge for the request.",
    "properties": _RECEIPT_USAGE,
}

_ANTHROPIC_USAGE = {
    "type": "object",
    "properties": {
        "input_tokens": {"type": "integer"},
        "output_tokens": {"type": "integer"},
        "cache_creation_input_tokens": {"type": "integer"},
        "cache_read_input_tokens": {"type": "integer"},
    },
    "additionalProperties": True,
}

_MESSAGE = {
    "type": "object",
    "description": "Anthropic's message, translated from the provider's chat completion.",
    "required": ["id", "type", "role", "model", "content", "stop_reason"],
    "properties": {
        "id": {"type": "string"},
        "type": {"const": "message"},
        "role": {"const": "assistant"},
        "model": {"type": "string"},
        "content": {
            "type": "array",
            "items": {
                "anyOf": [
                    {
                        "type": "object",
                        "required": ["type", "text"],
                        "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
                    },
                    {
                        "type": "object",
                        "required": ["type", "id", "name", "input"],
                        "properties": {
                            "type": {"const": "tool_use"},
                            "id": {"type": "string"},
                            "name": {"type": "string"},
                            "input": {"type": "object"},
                        },
                    },
                ]
            },
        },
        "stop_reason": {"type": ["string", "null"]},
        "stop_sequence": {"type": ["string", "null"]},
        "usage": _ref("AnthropicUsage"),
        "tallyhub": _ref("TallyhubReceipt"),
    },
}

_MESSAGE_STREAM_EVENT = {
    "type": "object",
    "description": "One event of a messages stream (`event: <type>` then `data: <event>`): message_start, "
    "content_block_start, content_block_delta, content_block_stop, message_delta (with the usage and "
    "Tallyhub's charge in `tallyhub`), message_stop; or error.",
    "required": ["type"],
    "properties": {
        "type": {
            "enum": [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
                "ping",
                "error",
            ]
        },
        "message": _ref("Message"),
        "index": {"type": "integer"},
        "content_block": {"type": "object"},
        "delta": {"type": "object"},
        "usage": _ref("AnthropicUsage"),
        "tallyhub": _ref("TallyhubReceipt"),
        "error": {"type": "object"},
    },
    "additionalProperties": True,
}

_EMBEDDINGS = {
    "type": "object",
    "description": "The provider's embeddings document as it sent it; Tallyhub's charge is in the "
    "x-tallyhub-charge headers.",
    "required": ["data"],
    "properties": {
        "object": {"type": "string", "examples": ["list"]},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "object": {"type": "string", "examples": ["embedding"]},
                    "index": {"type": "integer"},
                    "embedding": {
                        "anyOf": [
                            {"type": "array", "items": {"type": "number"}},
                            {"type": "string", "description": "base64, with encoding_format: base64"},
                        ]
                    },
                },
                "additionalProperties": True,
            },
        },
        "model": {"type": "string"},
        "usage": {
            "type": "object",
            "properties": {"prompt_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}},
            "additionalProperties": True,
        },
    },
    "additionalProperties": True,
}

# -- errors ----------------------------------------------------------------------------

_OPENAI_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_ANTHROPIC_ERROR = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        },
    },
}

COMPONENTS: dict[str, dict[str, Any]] = {
    "ChatCompletionRequest": _CHAT_REQUEST,
    "ChatMessage": _CHAT_MESSAGE,
    "ChatContentPart": _CHAT_PART,
    "ChatTool": _CHAT_TOOL,
    "MessagesRequest": _MESSAGES_REQUEST,
    "AnthropicMessage": _MESSAGES_MESSAGE,
    "AnthropicTool": _MESSAGES_TOOL,
    "EmbeddingsRequest": _EMBEDDINGS_REQUEST,
    "ChatCompletion": _CHAT_COMPLETION,
    "ChatCompletionChunk": _CHAT_CHUNK,
    "ToolCall": _TOOL_CALL,
    "OpenAIUsage": _OPENAI_USAGE,
    "Message": _MESSAGE,
    "MessageStreamEvent": _MESSAGE_STREAM_EVENT,
    "AnthropicUsage": _ANTHROPIC_USAGE,
    "TallyhubReceipt": _TALLYHUB_RECEIPT,
    "Embeddings": _EMBEDDINGS,
    "OpenAIError": _OPENAI_ERROR,
    "AnthropicError": _ANTHROPIC_ERROR,
    "MessagesCountTokensRequest": _COUNT_TOKENS_REQUEST,
    "MessageTokensCount": _TOKENS_COUNT,
    **RESPONSES_COMPONENTS,  # POST /v1/responses (adapters/http/responses_schemas.py)
}

_ERROR_STATUSES = {
    "400": "The body is not what the endpoint accepts (the field is named in param).",
    "401": "No API key, or not a valid one.",
    "402": "Not enough credit for the request's worst case.",
    "403": "The key may not use this model.",
    "404": "No such model.",
    "413": "The body is larger than TALLYHUB_MAX_BODY_BYTES.",
    "429": "A rate limit (rate_limit_exceeded) or spend cap is reached, or the provider is rate limiting.",
    "502": "The provider failed or answered something unreadable.",
    "503": "No provider is available for the model now.",
    "504": "The provider did not answer in time.",
}


def _operation(summary: str, request: str, error: str, success: dict[str, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": success}
    for status, description in _ERROR_STATUSES.items():
        responses[status] = {"description": description, "content": {"application/json": {"schema": _ref(error)}}}
    return {
        "summary": summary,
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(request)}}},
        "responses": responses,
    }


_RECEIPT_HEADERS = {
    "x-tallyhub-charge": {"description": "The charge in credits (decimal text).", "schema": {"type": "string"}},
    "x-tallyhub-charge-nanocredits": {"description": "The charge in nanocredits.", "schema": {"type": "integer"}},
    "x-tallyhub-price-book-version": {"schema": {"type": "integer"}},
    "x-tallyhub-usage-source": {"description": "provider or estimate.", "schema": {"type": "string"}},
    "x-request-id": {"description": "The request's id (its record in the ledger).", "schema": {"type": "string"}},
}


def _answer(description: str, document: str, stream_event: str | None, stream: str = "") -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": _ref(document)}}
    if stream_event is not None:
        content["text/event-stream"] = {
            "schema": {
                "type": "string",
                "description": f"With stream: true, server-sent events: {stream} Each data line holds one "
                f"{stream_event} (#/components/schemas/{stream_event}).",
            }
        }
    return {"description": description, "headers": _RECEIPT_HEADERS, "content": content}


HOT_ROUTES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/chat/completions"): _operation(
        "Create a chat completion (OpenAI's format)",
        "ChatCompletionRequest",
        "OpenAIError",
        _answer(
            "The provider's completion, charged (a stream's charge is in its last chunk's usage; "
            "the x-tallyhub-charge headers are on plain answers only).",
            "ChatCompletion",
            "ChatCompletionChunk",
            "`data: <chunk>` frames, then `data: [DONE]`.",
        ),
    ),
    ("POST", "/v1/messages"): _operation(
        "Create a message (Anthropic's format)",
        "MessagesRequest",
        "AnthropicError",
        _answer(
            "The message, charged (its charge in `tallyhub`, and a stream's in its message_delta event).",
            "Message",
            "MessageStreamEvent",
            "`event: <type>` and `data: <event>` pairs, from message_start to message_stop.",
        ),
    ),
    ("POST", "/v1/messages/count_tokens"): _operation(
        "Count a message's input tokens (Anthropic's format; never charged)",
        "MessagesCountTokensRequest",
        "AnthropicError",
        {
            "description": "The provider's count (Anthropic models) or the gateway's estimate (the others).",
            "headers": {
                "x-tallyhub-usage-source": {"description": "provider or estimated.", "schema": {"type": "string"}},
                "x-request-id": _RECEIPT_HEADERS["x-request-id"],
            },
            "content": {"application/json": {"schema": _ref("MessageTokensCount")}},
        },
    ),
    ("POST", "/v1/responses"): _operation(
        "Create a response (OpenAI's Responses format)",
        "ResponsesRequest",
        "OpenAIError",
        _answer(
            "The Response, charged (its charge in usage, and a stream's in its response.completed event).",
            "Response",
            "ResponseStreamEvent",
            "`event: <type>` and `data: <event>` pairs, from response.created to response.completed.",
        ),
    ),
    ("POST", "/v1/embeddings"): _operation(
        "Create embeddings (OpenAI's format)",
        "EmbeddingsRequest",
        "OpenAIError",
        _answer("The provider's embeddings document, charged.", "Embeddings", None),
    ),
}


def document_hot_routes(app: FastAPI) -> None:
    """Give the hot routes their request and error schemas in ``app.openapi()``: the
    generated document's operations for them are completed once, when it is built."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            for (method, path), extra in HOT_ROUTES.items():
                operation = document.get("paths", {}).get(path, {}).get(method.lower())
                if operation is not None:
                    operation.update(extra)
            document.setdefault("components", {}).setdefault("schemas", {}).update(COMPONENTS)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
