"""A fake Anthropic upstream: a real HTTP server speaking the Messages API wire format.

``POST /v1/messages`` answers like ``https://api.anthropic.com`` closely enough for the
official ``anthropic`` SDK and for Tallyhub's ``AnthropicProvider``:

* a ``message`` JSON object, or with ``"stream": true`` a ``text/event-stream`` of named
  events (``event: <type>`` + ``data: {json}``): ``message_start``, per block
  ``content_block_start`` / ``content_block_delta``… / ``content_block_stop`` (one
  ``ping`` after the first block starts), ``message_delta``, ``message_stop``;
* errors as ``{"type": "error", "error": {"type", "message"}, "request_id"}`` with
  Anthropic's statuses and error types (529 ``overloaded_error``…);
* ``GET /v1/models`` (a short fixed list, MODELS), authenticated like the rest;
* authentication by ``x-api-key`` (or ``Authorization: Bearer``, as SDK 2.x sends):
  401 ``authentication_error`` when missing or wrong; ``anthropic-version`` is required
  (``2023-06-01`` or ``2026-10-21``; the latter refuses ``temperature``/``top_p``/``top_k``);
* validation (400 ``invalid_request_error``): ``model``, ``max_tokens`` and ``messages``
  required, unknown top-level fields refused ("Extra inputs are not permitted"), roles
  ``user``/``assistant`` alternating, non-empty content and text blocks, known block
  types, ``tool_use`` only from the assistant and answered by ``tool_result`` blocks
  (first in the next user turn) with matching ids, tools with an object
  ``input_schema``, ``tool_choice``, ``stop_sequences``, ``temperature``/``top_p`` in 0–1.

What it answers (deterministic):

* a ``tool_use`` block when ``tools`` are given, ``tool_choice`` is not ``none`` and the
  last user turn holds no ``tool_result``: the named tool for ``{"type": "tool"}``, else
  the first; its input has a placeholder per schema property (tests.fakes.openai_wire);
  with ``tool_choice`` ``auto`` (or absent) a text block ``"Calling <name>."`` precedes it;
  ``stop_reason`` is ``tool_use``;
* otherwise the reply text (``reply_text``, a script's ``reply``, or placeholder JSON
  for ``output_config.format``), cut before the earliest of ``stop_sequences``
  (``stop_reason`` ``stop_sequence``) and truncated to ``max_tokens`` tokens
  (``max_tokens``), else ``end_turn``;
* with ``thinking`` enabled or adaptive, a ``thinking`` block (THINKING_TEXT, signed
  ``fake-signature-<seq>``) first, then a ``redacted_thinking`` block (REDACTED_DATA) when
  scripted (``AnthropicScript.redacted_thinking()``).

Extended thinking and prompt caching are checked as Anthropic does: ``budget_tokens`` at
least 1024 and below ``max_tokens``; earlier ``thinking`` blocks must carry a signature this
fake issued for exactly THINKING_TEXT ("Invalid `signature`"), and with thinking on, the
assistant turn a tool loop continues from (the last assistant turn, with ``tool_use``,
answered by the last user turn) must start with a ``thinking`` / ``redacted_thinking`` block;
``cache_control`` is ``{"type": "ephemeral"}`` with an optional ``ttl`` of ``5m`` / ``1h``,
on at most 4 blocks (system, tools and message blocks), never on a thinking block.

Token rule (not a real tokenizer): a text is split into word-ish tokens
(``tests.fakes.openai_wire.reply_tokens``: "Hello from fake Claude" is 4); a stream sends
one delta per token, and ``output_tokens`` counts the tokens of every block produced
(text, thinking, and the tool input JSON). The prompt counts
``chars // 4 + number of messages + IMAGE_TOKENS per image or document``, where chars
are those of the system text, text blocks, and tool_result texts. ``input_tokens`` is
that count minus the cache tokens; ``cache_read_input_tokens`` and
``cache_creation_input_tokens`` are 0 unless scripted (``AnthropicScript.usage``), so
by default ``input + cache_read + cache_creation`` is the prompt count. In a stream,
``message_start`` carries the input side with ``output_tokens: 1`` and ``message_delta``
the cumulative totals.

Use in tests::

    with FakeAnthropicUpstream() as upstream:        # or .start() / .stop()
        upstream.script(AnthropicScript.error(529, "Overloaded"), AnthropicScript.break_after_events(4))
        ... POST {upstream.base_url}/v1/messages ...
        assert upstream.requests[0].json["max_tokens"] == 4096
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from aiohttp import web

from .fake_server import RECORD_KEY, SEQ_KEY, FakeServer, RecordedRequest, Script, drop_connection, json_response
from .openai_wire import placeholder_arguments, reply_tokens

__all__ = ["AnthropicScript", "FakeAnthropicUpstream", "RecordedRequest", "count_input_tokens", "reply_tokens"]

DEFAULT_API_KEY = "sk-ant-upstream-test-0001"
DEFAULT_REPLY_TEXT = "Hello from fake Claude"
MODELS = ("claude-sonnet-4-6", "claude-haiku-4-5")
THINKING_TEXT = "Let me think."
REDACTED_DATA = "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP"
MAX_CACHE_BREAKPOINTS = 4
IMAGE_TOKENS = 100
API_VERSIONS = ("2023-06-01", "2026-10-21")
SAMPLING_FIELDS = ("temperature", "top_p", "top_k")
KNOWN_FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "metadata",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "thinking",
        "output_config",
        "service_tier",
        "container",
        "mcp_servers",
        "context_management",
        "cache_control",
        "inference_geo",
        "speed",
        "diagnostics",
        "user_profile_id",
        "workspace_id",
    }
)
BLOCK_TYPES = ("text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking")
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,128}")


@dataclass(frozen=True)
class AnthropicScript(Script):
    """How the fake answers one ``POST /v1/messages`` (FIFO, one per request); unset = normal."""

    delay_seconds: float = 0.0
    error_status: int | None = None  # an error envelope instead of an answer (before auth)
    error_message: str = ""
    error_type: str | None = None  # default: Anthropic's type for the status
    retry_after: float | None = None
    raw_status: int | None = None  # exactly these bytes (a proxy's HTML page…)
    raw_body: str = ""
    break_after: int | None = None  # streams: send this many events, then drop the TCP connection
    end_after: int | None = None  # streams: send this many events, then end the response cleanly
    error_event_after: int | None = None  # streams: send this many events, then an ``error`` event
    event_error_type: str = "overloaded_error"
    event_error_message: str = "Overloaded"
    event_delay_seconds: float = 0.0  # streams: sleep before every event after the first
    usage_overrides: dict[str, Any] = field(default_factory=dict)
    reply_text: str | None = None
    redacted: bool = False  # with thinking on: a redacted_thinking block after the thinking block

    @classmethod
    def error(
        cls,
        status: int,
        message: str = "Internal server error",
        *,
        type: str | None = None,
        retry_after: float | None = None,
    ) -> AnthropicScript:
        return cls(error_status=status, error_message=message, error_type=type, retry_after=retry_after)

    @classmethod
    def raw(cls, status: int, body: str) -> AnthropicScript:
        return cls(raw_status=status, raw_body=body)

    @classmethod
    def delay(cls, seconds: float) -> AnthropicScript:
        return cls(delay_seconds=seconds)

    @classmethod
    def break_after_events(cls, events: int) -> AnthropicScript:
        """Streams: ``events`` SSE events, then a dropped connection; plain answers: no answer at all."""
        return cls(break_after=events)

    @classmethod
    def end_after_events(cls, events: int) -> AnthropicScript:
        """Streams: ``events`` SSE events, then a cleanly ended response (no ``message_stop``)."""
        return cls(end_after=events)

    @classmethod
    def error_event(cls, after: int, type: str = "overloaded_error", message: str = "Overloaded") -> AnthropicScript:
        return cls(error_event_after=after, event_error_type=type, event_error_message=message)

    @classmethod
    def event_delay(cls, seconds: float) -> AnthropicScript:
        return cls(event_delay_seconds=seconds)

    @classmethod
    def usage(cls, **numbers: Any) -> AnthropicScript:
        """Override usage: input_tokens, output_tokens, cache_read_input_tokens, cache_creation_input_tokens,
        the TTL split ephemeral_5m_input_tokens / ephemeral_1h_input_tokens (cache_creation_input_tokens
        defaults to their sum; without them all writes are 5-minute), cache_creation=False (no
        ``cache_creation`` object, as older API versions), web_search_requests (``server_tool_use``)
        and service_tier (default "standard")."""
        allowed = {
            "input_tokens",
            "output_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
            "ephemeral_5m_input_tokens",
            "ephemeral_1h_input_tokens",
            "cache_creation",
            "web_search_requests",
            "service_tier",
        }
        if not set(numbers) <= allowed:
            raise ValueError(f"unknown usage fields: {sorted(set(numbers) - allowed)}")
        return cls(usage_overrides=numbers)

    @classmethod
    def reply(cls, text: str) -> AnthropicScript:
        return cls(reply_text=text)

    @classmethod
    def redacted_thinking(cls, **numbers: Any) -> AnthropicScript:
        """With thinking on, a ``redacted_thinking`` block after the thinking block (usage as ``usage``)."""
        return replace(cls.usage(**numbers), redacted=True)


class Reject(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# -------------------------------------------------------------------------- tokens


def _block_text(block: Any) -> str:
    if not isinstance(block, dict):
        return ""
    if block.get("type") == "text":
        return str(block.get("text") or "")
    if block.get("type") == "tool_result":
        content = block.get("content")
        return content if isinstance(content, str) else "".join(_block_text(b) for b in content or ())
    return ""


def _blocks(content: Any) -> list[Any]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content or ())


def count_input_tokens(body: dict[str, Any]) -> int:
    """The prompt count of the module docstring (before cache tokens are taken out)."""
    system = body.get("system")
    chars = sum(len(_block_text(b)) for b in _blocks(system))
    media = 0
    for message in body["messages"]:
        for block in _blocks(message.get("content")):
            chars += len(_block_text(block))
            media += isinstance(block, dict) and block.get("type") in ("image", "document")
    return chars // 4 + len(body["messages"]) + IMAGE_TOKENS * media


# -------------------------------------------------------------------------- validation


def validate(body: Any, version: str) -> None:
    if not isinstance(body, dict):
        raise Reject(400, "Request body must be a JSON object")
    refused = sorted(k for k in body if k not in KNOWN_FIELDS or (version != "2023-06-01" and k in SAMPLING_FIELDS))
    if refused:
        raise Reject(400, f"{refused[0]}: Extra inputs are not permitted")
    for name in ("model", "max_tokens", "messages"):
        if name not in body:
            raise Reject(400, f"{name}: Field required")
    if not isinstance(body["model"], str) or not body["model"]:
        raise Reject(400, "model: Input should be a valid string")
    if not isinstance(body["max_tokens"], int) or isinstance(body["max_tokens"], bool) or body["max_tokens"] < 1:
        raise Reject(400, "max_tokens: Input should be greater than or equal to 1")
    _validate_system(body.get("system"))
    _validate_messages(body["messages"])
    _validate_tools(body.get("tools"), body.get("tool_choice"))
    for name in ("temperature", "top_p"):
        value = body.get(name)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if value is not None and (not number or not 0 <= value <= 1):
            raise Reject(400, f"{name}: Input should be less than or equal to 1")
    stops = body.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) and s.strip() for s in stops)):
        raise Reject(400, "stop_sequences: each stop sequence must be a non-empty string")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise Reject(400, "stream: Input should be a valid boolean")
    for name in ("thinking", "output_config", "metadata"):
        if name in body and not isinstance(body[name], dict):
            raise Reject(400, f"{name}: Input should be a valid dictionary")
    _validate_thinking(body)
    _validate_cache_marks(body)
    if set(body.get("metadata") or {}) - {"user_id"}:
        raise Reject(400, "metadata: only user_id is permitted")


def _validate_system(system: Any) -> None:
    if system is None or isinstance(system, str):
        return
    if not isinstance(system, list) or not all(isinstance(b, dict) and b.get("type") == "text" for b in system):
        raise Reject(400, "system: Input should be a valid string or a list of text blocks")
    for block in system:
        _validate_block(block, "system", "user")


def _validate_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise Reject(400, "messages: at least one message is required")
    previous: dict[str, Any] | None = None
    for index, message in enumerate(messages):
        where = f"messages.{index}"
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise Reject(400, f"{where}.role: Input should be 'user' or 'assistant'")
        if previous is not None and previous["role"] == role:
            raise Reject(
                400,
                f'messages: roles must alternate between "user" and "assistant", '
                f'but found multiple "{role}" roles in a row',
            )
        content = message.get("content")
        if not isinstance(content, (str, list)) or not content:
            raise Reject(
                400,
                f"{where}: all messages must have non-empty content except for the optional final assistant message",
            )
        for number, block in enumerate(_blocks(content)):
            _validate_block(block, f"{where}.content.{number}", role)
        _validate_tool_pairing(previous, message, index)
        previous = message
    pending = _tool_use_ids(previous)
    if pending:
        raise Reject(
            400,
            f"messages: `tool_use` ids were found without `tool_result` blocks immediately after: "
            f"{', '.join(sorted(pending))}. Each `tool_use` block must have a corresponding "
            "`tool_result` block in the next message.",
        )


def _validate_block(block: Any, where: str, role: str) -> None:
    kind = block.get("type") if isinstance(block, dict) else None
    if kind not in BLOCK_TYPES:
        raise Reject(
            400,
            f"{where}.type: Input tag {kind!r} found using 'type' does not match any of the "
            f"expected tags: {', '.join(repr(t) for t in BLOCK_TYPES)}",
        )
    if kind == "text" and (not isinstance(block.get("text"), str) or not block["text"]):
        raise Reject(400, f"{where}: text content blocks must be non-empty")
    if kind == "image":
        _validate_source(block.get("source"), where, IMAGE_MEDIA_TYPES)
    if kind == "document":
        _validate_source(block.get("source"), where, ("application/pdf",))
    if kind == "tool_use":
        if role != "assistant":
            raise Reject(400, f"{where}: tool_use blocks can only appear in assistant messages")
        if not (
            isinstance(block.get("id"), str)
            and isinstance(block.get("name"), str)
            and isinstance(block.get("input"), dict)
        ):
            raise Reject(400, f"{where}: tool_use blocks need a string id, a name and an object input")
    if kind == "tool_result":
        if role != "user":
            raise Reject(400, f"{where}: tool_result blocks can only appear in user messages")
        if not isinstance(block.get("tool_use_id"), str):
            raise Reject(400, f"{where}.tool_use_id: Field required")
        content = block.get("content")
        if content is not None and not isinstance(content, str):
            for number, inner in enumerate(content if isinstance(content, list) else [None]):
                if not isinstance(inner, dict) or inner.get("type") not in ("text", "image", "document"):
                    raise Reject(400, f"{where}.content.{number}: tool_result content must be text, image or document")
                _validate_block(inner, f"{where}.content.{number}", role)


def _thinking_on(body: dict[str, Any]) -> bool:
    return (body.get("thinking") or {}).get("type") in ("enabled", "adaptive")


def _validate_thinking(body: dict[str, Any]) -> None:
    thinking = body.get("thinking") or {}
    if thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or budget < 1024:
            raise Reject(400, "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
        if body["max_tokens"] <= budget:
            raise Reject(400, "`max_tokens` must be greater than `thinking.budget_tokens`")
    for index, message in enumerate(body["messages"]):
        for number, block in enumerate(_blocks(message["content"])):
            if block.get("type") == "thinking" and not (
                str(block.get("signature") or "").startswith("fake-signature-")
                and block.get("thinking") == THINKING_TEXT
            ):
                raise Reject(400, f"messages.{index}.content.{number}: Invalid `signature` in `thinking` block")
    if not _thinking_on(body) or len(body["messages"]) < 2:
        return
    index = len(body["messages"]) - 2
    previous, last = body["messages"][index], body["messages"][-1]
    answered = any(b.get("type") == "tool_result" for b in _blocks(last["content"]))
    if previous["role"] == "assistant" and _tool_use_ids(previous) and answered:
        first = _blocks(previous["content"])[0]
        if first.get("type") not in ("thinking", "redacted_thinking"):
            raise Reject(
                400,
                f"messages.{index}.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
                f"`{first.get('type')}`. When `thinking` is enabled, a final `assistant` message must start "
                "with a thinking block.",
            )


def _validate_cache_marks(body: dict[str, Any]) -> None:
    marked = [(f"tools.{n}", t) for n, t in enumerate(body.get("tools") or ()) if isinstance(t, dict)]
    system = body.get("system")
    marked += [(f"system.{n}", b) for n, b in enumerate(system)] if isinstance(system, list) else []
    for index, message in enumerate(body["messages"]):
        for number, block in enumerate(_blocks(message["content"])):
            marked.append((f"messages.{index}.content.{number}", block))
    found = 0
    for where, block in marked:
        mark = block.get("cache_control")
        if mark is None:
            continue
        if block.get("type") in ("thinking", "redacted_thinking"):
            raise Reject(400, f"{where}.{block['type']}.cache_control: Extra inputs are not permitted")
        if not isinstance(mark, dict) or mark.get("type") != "ephemeral" or mark.get("ttl", "5m") not in ("5m", "1h"):
            raise Reject(400, f"{where}.cache_control: Input should be {{type: ephemeral, ttl?: 5m | 1h}}")
        found += 1
    if found > MAX_CACHE_BREAKPOINTS:
        raise Reject(
            400, f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. Found {found}."
        )


def _validate_source(source: Any, where: str, media_types: tuple[str, ...]) -> None:
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "url" and isinstance(source.get("url"), str) and source["url"].startswith(("http://", "https://")):
        return
    if kind == "base64" and isinstance(source.get("data"), str) and source["data"]:
        if source.get("media_type") not in media_types:
            raise Reject(400, f"{where}.source.media_type: Input should be {' or '.join(media_types)}")
        return
    raise Reject(400, f"{where}.source: expected a base64 source (media_type, data) or a url source")


def _tool_use_ids(message: dict[str, Any] | None) -> set[str]:
    if message is None or message["role"] != "assistant":
        return set()
    return {b["id"] for b in _blocks(message["content"]) if b.get("type") == "tool_use"}


def _validate_tool_pairing(previous: dict[str, Any] | None, message: dict[str, Any], index: int) -> None:
    if message["role"] != "user":
        return
    expected = _tool_use_ids(previous)
    blocks = _blocks(message["content"])
    results = [b for b in blocks if b.get("type") == "tool_result"]
    if results and any(b.get("type") != "tool_result" for b in blocks[: len(results)]):
        raise Reject(400, f"messages.{index}: tool_result blocks must come first in the content array")
    for number, block in enumerate(results):
        if block["tool_use_id"] not in expected:
            raise Reject(
                400,
                f"messages.{index}.content.{number}: unexpected `tool_use_id` found in `tool_result` "
                f"blocks: {block['tool_use_id']}. Each `tool_result` block must have a corresponding "
                "`tool_use` block in the previous message.",
            )
    missing = expected - {b["tool_use_id"] for b in results}
    if missing:
        raise Reject(
            400,
            f"messages.{index}: `tool_use` ids were found without `tool_result` blocks immediately "
            f"after: {', '.join(sorted(missing))}. Each `tool_use` block must have a corresponding "
            "`tool_result` block in the next message.",
        )


def _validate_tools(tools: Any, choice: Any) -> None:
    if tools is not None:
        if not isinstance(tools, list):
            raise Reject(400, "tools: Input should be a valid list")
        for number, tool in enumerate(tools):
            if not isinstance(tool, dict) or not _TOOL_NAME.fullmatch(str(tool.get("name"))):
                raise Reject(400, f"tools.{number}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'")
            schema = tool.get("input_schema")
            custom = tool.get("type") in (None, "custom")
            if custom and (not isinstance(schema, dict) or schema.get("type") != "object"):
                raise Reject(400, f"tools.{number}.custom.input_schema: Input should be a JSON schema of type object")
    if choice is None:
        return
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind not in ("auto", "any", "tool", "none"):
        raise Reject(400, "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    if kind == "tool" and choice.get("name") not in {t.get("name") for t in tools or ()}:
        raise Reject(400, f"tool_choice: tool {choice.get('name')!r} not found in tools")


# -------------------------------------------------------------------------- answers


@dataclass
class Block:
    """One content block of an answer: what ``content_block_start`` shows, then its deltas."""

    start: dict[str, Any]
    deltas: list[dict[str, Any]]
    final: dict[str, Any]
    tokens: int


def _text_block(text: str) -> Block:
    tokens = reply_tokens(text)
    return Block(
        {"type": "text", "text": ""},
        [{"type": "text_delta", "text": t} for t in tokens],
        {"type": "text", "text": text},
        len(tokens),
    )


def _thinking_block(signature: str) -> Block:
    tokens = reply_tokens(THINKING_TEXT)
    deltas = [{"type": "thinking_delta", "thinking": t} for t in tokens]
    return Block(
        {"type": "thinking", "thinking": "", "signature": ""},
        deltas + [{"type": "signature_delta", "signature": signature}],
        {"type": "thinking", "thinking": THINKING_TEXT, "signature": signature},
        len(tokens),
    )


def _redacted_block() -> Block:
    block = {"type": "redacted_thinking", "data": REDACTED_DATA}
    return Block(block, [], block, 0)


def _tool_block(call_id: str, tool: dict[str, Any]) -> Block:
    arguments = placeholder_arguments(tool.get("input_schema"))
    tokens = reply_tokens(arguments)
    deltas = [{"type": "input_json_delta", "partial_json": ""}]
    deltas += [{"type": "input_json_delta", "partial_json": t} for t in tokens]
    use = {"type": "tool_use", "id": call_id, "name": tool["name"]}
    return Block({**use, "input": {}}, deltas, {**use, "input": orjson.loads(arguments)}, len(tokens))


def _chosen_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    tools = [t for t in body.get("tools") or () if t.get("type") in (None, "custom")]
    choice = body.get("tool_choice") or {"type": "auto"}
    last = body["messages"][-1]
    answered = any(b.get("type") == "tool_result" for b in _blocks(last["content"]))
    if not tools or choice["type"] == "none" or last["role"] != "user" or answered:
        return None
    return next((t for t in tools if t["name"] == choice.get("name")), tools[0])


def _stop_at(text: str, sequences: list[str]) -> tuple[str, str | None]:
    hits = [(text.find(s), s) for s in sequences if s in text]
    if not hits:
        return text, None
    position, sequence = min(hits)
    return text[:position], sequence


def answer(
    body: dict[str, Any], reply_text: str, seq: int, redacted: bool = False
) -> tuple[list[Block], str, str | None]:
    """The blocks, ``stop_reason`` and ``stop_sequence`` of the answer to a valid request."""
    blocks: list[Block] = []
    if _thinking_on(body):
        blocks.append(_thinking_block(f"fake-signature-{seq:06d}"))
        if redacted:
            blocks.append(_redacted_block())
    tool = _chosen_tool(body)
    if tool is not None:
        if (body.get("tool_choice") or {"type": "auto"})["type"] == "auto":
            blocks.append(_text_block(f"Calling {tool['name']}."))
        blocks.append(_tool_block(f"toolu_fake{seq:06d}", tool))
        return blocks, "tool_use", None
    output_format = (body.get("output_config") or {}).get("format")
    if isinstance(output_format, dict) and output_format.get("type") == "json_schema":
        reply_text = placeholder_arguments(output_format.get("schema"))
    text, sequence = _stop_at(reply_text, body.get("stop_sequences") or [])
    tokens = reply_tokens(text)
    if len(tokens) > body["max_tokens"]:
        blocks.append(_text_block("".join(tokens[: body["max_tokens"]])))
        return blocks, "max_tokens", None
    if text:
        blocks.append(_text_block(text))
    return blocks, ("stop_sequence" if sequence is not None else "end_turn"), sequence


# -------------------------------------------------------------------------- the server


class FakeAnthropicUpstream(FakeServer[AnthropicScript]):
    """Fake Anthropic API on ``127.0.0.1`` (an ephemeral port unless ``port`` is given).

    ``base_url`` is the server root (the SDK's ``base_url``; requests go to
    ``{base_url}/v1/messages``). Only ``POST /v1/messages`` is recorded. ``reply_text``
    may be changed while running; :meth:`reset` restores it and forgets requests and scripts.
    """

    label = "Anthropic"
    script_type = AnthropicScript

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        reply_text: str = DEFAULT_REPLY_TEXT,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.api_key = api_key
        self.reply_text = reply_text
        self._restore_on_reset("reply_text")

    def build_routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/messages", self._messages),
            web.get("/v1/models", self._models),
            web.route("*", "/{tail:.*}", self._not_found),
        ]

    def _should_record(self, request: web.Request) -> bool:
        return request.method == "POST" and request.path == "/v1/messages"

    # -- POST /v1/messages

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body, seq = request[RECORD_KEY].json, request[SEQ_KEY]
        script = self._next_script()
        response_headers = {"request-id": f"req_fake{seq:06d}"}
        if script.delay_seconds:
            await asyncio.sleep(script.delay_seconds)
        if script.error_status is not None:
            if script.retry_after is not None:
                response_headers["retry-after"] = f"{script.retry_after:g}"
            return self._error(script.error_status, script.error_message, response_headers, script.error_type)
        if script.raw_status is not None:
            return web.Response(
                status=script.raw_status, text=script.raw_body, content_type="text/html", headers=response_headers
            )
        try:
            self._check_headers(request)
            if body is None:
                raise Reject(400, "There was an issue with the request body: invalid JSON")
            validate(body, request.headers["anthropic-version"])
        except Reject as rejection:
            return self._error(rejection.status, rejection.message, response_headers)
        streaming = body.get("stream") is True
        if script.break_after is not None and not streaming:
            return drop_connection(request)
        blocks, stop_reason, stop_sequence = answer(body, script.reply_text or self.reply_text, seq, script.redacted)
        usage = self._usage(script, count_input_tokens(body), sum(b.tokens for b in blocks))
        message = {
            "id": f"msg_fake{seq:06d}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [b.final for b in blocks],
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": usage,
        }
        if not streaming:
            return json_response(message, headers=response_headers)
        return await self._stream(request, response_headers, message, blocks, script)

    def _check_headers(self, request: web.Request) -> None:
        key = request.headers.get("x-api-key")
        if key is None:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            key = token.strip() if scheme.lower() == "bearer" else None
        if not key:
            raise Reject(401, "x-api-key header is required")
        if key != self.api_key:
            raise Reject(401, "invalid x-api-key")
        version = request.headers.get("anthropic-version")
        if version is None:
            raise Reject(400, "anthropic-version: header is required")
        if version not in API_VERSIONS:
            raise Reject(400, f"anthropic-version: {version!r} is not a valid version")

    @staticmethod
    def _usage(script: AnthropicScript, prompt: int, output: int) -> dict[str, Any]:
        options = dict(script.usage_overrides)
        five = options.pop("ephemeral_5m_input_tokens", None)
        hour = options.pop("ephemeral_1h_input_tokens", None)
        with_creation = options.pop("cache_creation", True)
        searches = options.pop("web_search_requests", None)
        tier = options.pop("service_tier", "standard")
        numbers = {
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": (five or 0) + (hour or 0),
            "output_tokens": output,
            **options,
        }
        if five is None and hour is None:
            five, hour = numbers["cache_creation_input_tokens"], 0
        cached = numbers["cache_read_input_tokens"] + numbers["cache_creation_input_tokens"]
        numbers.setdefault("input_tokens", max(prompt - cached, 0))
        usage: dict[str, Any] = {
            "input_tokens": numbers["input_tokens"],
            "cache_creation_input_tokens": numbers["cache_creation_input_tokens"],
            "cache_read_input_tokens": numbers["cache_read_input_tokens"],
        }
        if with_creation:
            usage["cache_creation"] = {"ephemeral_5m_input_tokens": five or 0, "ephemeral_1h_input_tokens": hour or 0}
        usage["output_tokens"] = numbers["output_tokens"]
        if searches is not None:
            usage["server_tool_use"] = {"web_search_requests": searches}
        usage["service_tier"] = tier
        return usage

    async def _stream(
        self,
        request: web.Request,
        headers: dict[str, str],
        message: dict[str, Any],
        blocks: list[Block],
        script: AnthropicScript,
    ) -> web.StreamResponse:
        usage = message["usage"]
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**usage, "output_tokens": 1},
        }
        events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
        for index, block in enumerate(blocks):
            events.append({"type": "content_block_start", "index": index, "content_block": block.start})
            if index == 0:
                events.append({"type": "ping"})
            events.extend({"type": "content_block_delta", "index": index, "delta": d} for d in block.deltas)
            events.append({"type": "content_block_stop", "index": index})
        final_usage = {
            k: usage[k]
            for k in (
                "input_tokens",
                "cache_creation_input_tokens",
                "cache_read_input_tokens",
                "output_tokens",
                "server_tool_use",
            )
            if k in usage
        }
        events.append(
            {
                "type": "message_delta",
                "usage": final_usage,
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]},
            }
        )
        events.append({"type": "message_stop"})

        response = web.StreamResponse(
            headers={**headers, "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        for number, event in enumerate(events):
            if number == script.break_after:
                return drop_connection(request)
            if number == script.end_after:
                break
            if number == script.error_event_after:
                event = {
                    "type": "error",
                    "error": {"type": script.event_error_type, "message": script.event_error_message},
                }
                await response.write(_sse(event))
                break
            if number and script.event_delay_seconds:
                await asyncio.sleep(script.event_delay_seconds)
            await response.write(_sse(event))
        await response.write_eof()
        return response

    @staticmethod
    def _error(status: int, message: str, headers: dict[str, str], error_type: str | None = None) -> web.Response:
        error = {"type": error_type or ERROR_TYPES.get(status, "api_error"), "message": message}
        body = {"type": "error", "error": error, "request_id": headers.get("request-id")}
        return json_response(body, status, headers)

    async def _models(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/models`` (authenticated, not recorded): what a credential probe calls."""
        try:
            self._check_headers(request)
        except Reject as rejection:
            return self._error(rejection.status, rejection.message, {})
        data = [
            {"type": "model", "id": model, "display_name": model, "created_at": "2025-01-01T00:00:00Z"}
            for model in MODELS
        ]
        return json_response({"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]})

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        return self._error(404, "Not Found", {})


def _sse(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
