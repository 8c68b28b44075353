"""OpenAI wire format: deterministic token rules and JSON body builders.

Pure functions only (no I/O), shared by the fake upstream server and by tests
that need to predict what it will answer.  The shapes follow OpenAI's public
API reference for ``POST /v1/chat/completions`` (``chat.completion`` and
``chat.completion.chunk`` objects), ``POST /v1/embeddings``, ``GET /v1/models``
and the ``{"error": {...}}`` envelope.

Token rules (deliberately simple, *not* tiktoken):

* Prompt tokens of a chat request -- :func:`count_prompt_tokens`::

      sum(len(text of each message)) // 4  +  1 per message

  where the text of a message is its ``content`` when that is a string, the
  concatenated ``text`` of its parts when it is a list of content parts, and
  ``""`` when it is ``None``/absent.  Names, roles, tool calls and images are
  not counted.

* Completion tokens -- :func:`reply_tokens` splits a text into "word-ish"
  tokens: each token is a run of whitespace followed by a run of
  non-whitespace (``re.findall(r"\\s*\\S+")``); trailing whitespace is glued
  to the last token.  ``"".join(reply_tokens(t)) == t`` always holds, and
  ``"Hello from fake upstream"`` is 4 tokens: ``"Hello", " from", " fake",
  " upstream"``.  A streamed reply sends exactly one content chunk per token.
  ``completion_tokens`` is the number of tokens actually produced, summed over
  the ``n`` choices.  For a tool call the tokens are those of the
  ``function.arguments`` JSON string.

* Embedding input tokens -- :func:`count_embedding_tokens`: each string input
  counts ``len(s) // 4 + 1``; each token-id array counts ``len(array)``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
from collections.abc import Iterable, Mapping
from typing import Any

DEFAULT_REPLY_TEXT = "Hello from fake upstream"
DEFAULT_EMBEDDING_DIMENSIONS = 8
CREATED = 1_700_000_000  # fixed "created" timestamp: responses are reproducible
SYSTEM_FINGERPRINT = "fp_fake_upstream"

# Top-level request fields OpenAI's chat completions endpoint documents; every
# other key is reported back in the ``x-fake-unknown-fields`` response header.
KNOWN_CHAT_FIELDS = frozenset(
    {
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "messages",
        "metadata",
        "modalities",
        "model",
        "moderation",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "reasoning_effort",
        "response_format",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
        "web_search_options",
    }
)
KNOWN_EMBEDDING_FIELDS = frozenset({"dimensions", "encoding_format", "input", "model", "user"})
VALID_ROLES = ("system", "assistant", "user", "function", "tool", "developer")

_TOKEN_RE = re.compile(r"\s*\S+")


# --------------------------------------------------------------------------- tokens


def message_text(message: Mapping[str, Any]) -> str:
    """The countable text of one chat message (see the module docstring)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text") or ""
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return ""


def count_prompt_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """``sum(len(message_text(m))) // 4 + len(messages)``."""
    messages = list(messages)
    return sum(len(message_text(m)) for m in messages) // 4 + len(messages)


def reply_tokens(text: str) -> list[str]:
    """Split ``text`` into word-ish tokens; ``"".join(result) == text``."""
    tokens = _TOKEN_RE.findall(text)
    tail = text[len("".join(tokens)) :]  # trailing whitespace (or all of text)
    if tail:
        if tokens:
            tokens[-1] += tail
        else:
            tokens = [tail]
    return tokens


def count_embedding_tokens(inputs: list[str | list[int]]) -> int:
    """``len(s) // 4 + 1`` per string input, ``len(ids)`` per token array."""
    return sum(len(i) // 4 + 1 if isinstance(i, str) else len(i) for i in inputs)


def apply_stop(text: str, stop: str | list[str] | None) -> tuple[str, bool]:
    """Cut ``text`` before the earliest stop sequence; returns (text, was_cut)."""
    if not stop:
        return text, False
    sequences = [stop] if isinstance(stop, str) else [s for s in stop if s]
    positions = [p for p in (text.find(s) for s in sequences) if p >= 0]
    if not positions:
        return text, False
    return text[: min(positions)], True


def truncate_tokens(tokens: list[str], limit: int | None) -> tuple[list[str], bool]:
    """Keep at most ``limit`` tokens; returns (tokens, was_truncated)."""
    if limit is None or len(tokens) <= limit:
        return tokens, False
    return tokens[:limit], True


# --------------------------------------------------------------------------- usage


def usage_body(
    prompt_tokens: int,
    completion_tokens: int,
    *,
    cached_tokens: int = 0,
    reasoning_tokens: int = 0,
) -> dict[str, Any]:
    """A ``usage`` object as OpenAI's chat completions endpoint reports it."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


# --------------------------------------------------------------------------- tool calls


def placeholder_arguments(parameters: Any) -> str:
    """Deterministic JSON arguments for a function's JSON-schema ``parameters``.

    Every declared property gets a placeholder: the first ``enum`` value, else
    ``"test"`` / ``1`` / ``1.5`` / ``true`` / ``[]`` / ``{}`` by type.
    """
    props = parameters.get("properties") if isinstance(parameters, Mapping) else None
    if not isinstance(props, Mapping):
        return "{}"
    by_type = {"string": "test", "integer": 1, "number": 1.5, "boolean": True, "array": [], "object": {}}
    args = {}
    for name, schema in props.items():
        schema = schema if isinstance(schema, Mapping) else {}
        enum = schema.get("enum")
        kind = schema.get("type")
        kind = kind[0] if isinstance(kind, list) and kind else kind
        args[name] = enum[0] if isinstance(enum, list) and enum else by_type.get(kind, "test")
    return json.dumps(args)


def choose_tool(tools: list[Any], tool_choice: Any) -> Mapping[str, Any] | None:
    """The function the fake "calls": the named one if ``tool_choice`` names one, else the first."""
    functions = [
        t["function"]
        for t in tools
        if isinstance(t, Mapping) and isinstance(t.get("function"), Mapping) and t["function"].get("name")
    ]
    if not functions:
        return None
    if isinstance(tool_choice, Mapping):
        wanted = (tool_choice.get("function") or {}).get("name")
        for fn in functions:
            if fn["name"] == wanted:
                return fn
    return functions[0]


def tool_call_body(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


# --------------------------------------------------------------------------- chat bodies


def chat_completion_body(
    *,
    completion_id: str,
    model: str,
    choices: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    service_tier: str = "default",
) -> dict[str, Any]:
    """A ``chat.completion`` object; ``usage=None`` omits the key entirely."""
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": choices,
        "service_tier": service_tier,
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    if usage is not None:
        body["usage"] = usage
    return body


def chat_choice(
    index: int,
    *,
    content: str | None,
    finish_reason: str,
    tool_calls: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"index": index, "message": message, "logprobs": None, "finish_reason": finish_reason}


def chunk_body(
    *,
    completion_id: str,
    model: str,
    choices: list[dict[str, Any]],
    include_usage: bool,
    usage: dict[str, Any] | None = None,
    service_tier: str = "default",
) -> dict[str, Any]:
    """A ``chat.completion.chunk`` object.

    With ``include_usage`` every chunk carries ``"usage"`` (``null`` except on
    the final, choice-less usage chunk), exactly as OpenAI does; without it the
    key is absent.
    """
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "service_tier": service_tier,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": choices,
    }
    if include_usage:
        body["usage"] = usage
    return body


def chunk_choice(index: int, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


# --------------------------------------------------------------------------- embeddings & models


def embedding_vector(item: str | list[int], dimensions: int) -> list[float]:
    """A deterministic unit vector derived from the input (values exact in float32)."""
    seed = hashlib.sha256(repr(item).encode()).digest()
    raw: list[float] = []
    counter = 0
    while len(raw) < dimensions:
        block = hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        raw.extend((b - 127.5) / 127.5 for b in block)
        counter += 1
    raw = raw[:dimensions]
    norm = sum(v * v for v in raw) ** 0.5 or 1.0
    unit = [v / norm for v in raw]
    # Round-trip through float32 so "float" and "base64" encodings agree exactly.
    return list(struct.unpack(f"<{dimensions}f", struct.pack(f"<{dimensions}f", *unit)))


def encode_embedding(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


def model_body(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": CREATED, "owned_by": "system"}


# --------------------------------------------------------------------------- errors


def error_type_for(status: int) -> str:
    """The ``error.type`` OpenAI uses for a status code."""
    if status == 429:
        return "requests"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def error_body(
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """OpenAI's error envelope: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}
