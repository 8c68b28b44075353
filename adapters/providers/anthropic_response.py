"""Anthropic Messages answers → OpenAI ``chat.completion`` documents and
``chat.completion.chunk`` streams.

Invariants:
- usage is the provider's own count, translated without loss for billing:
  ``prompt_tokens = input_tokens + cache_read_input_tokens + cache_creation_input_tokens``,
  ``cached_tokens = cache_read_input_tokens``, cache writes apart from both
  (``prompt_tokens_details.cache_write_tokens``, as OpenRouter reports them, and, when
  Anthropic sends ``cache_creation``, their split by TTL as ``cache_write_5m_tokens`` /
  ``cache_write_1h_tokens``), ``completion_tokens = output_tokens`` (thinking included;
  ``reasoning_tokens`` from ``output_tokens_details.thinking_tokens``), web searches as
  ``server_tool_use.web_search_requests``, and ``usage.service_tier`` as the answer's
  (and the usage chunk's) top-level ``service_tier``, where OpenAI puts it;
- a stream is finished only by ``message_stop``: an ``error`` event raises
  ``AnthropicStreamError`` and any other malformed or out-of-order event raises
  ``MalformedUpstreamAnswer`` (both one of ``READ_FAILURES``), so the gateway never
  mistakes a broken stream for a whole one. Each field read from the provider is checked
  where it is read: a KeyError or TypeError here is a bug of ours, not the provider's.

Text blocks become ``content``, ``tool_use`` blocks ``tool_calls`` (arguments as JSON
text), ``thinking`` blocks ``reasoning_content`` (their text) and, with their signatures,
``thinking_blocks`` (``{"type": "thinking", "thinking", "signature"}``, and
``{"type": "redacted_thinking", "data"}`` for redacted ones), in the order Anthropic sent
them, so a chat client can send them back in its next turn (adapters/providers/fidelity.py).
In a stream the thinking text arrives as ``reasoning_content`` deltas, and each thinking
block whole, with its signature, as one ``thinking_blocks`` delta when it ends (a redacted
one when it starts). Other block types (server tools) are not relayed.
"""

from typing import Any

import orjson

from adapters.providers.base import upstream_object
from adapters.providers.openai_family import reported_count, summed
from domain.errors import MalformedUpstreamAnswer

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
USAGE_FIELDS = (
    "input_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "output_tokens",
    "output_tokens_details",
    "cache_creation",
    "server_tool_use",
    "service_tier",
)


class AnthropicStreamError(MalformedUpstreamAnswer):
    """The provider sent an ``error`` event in the middle of a stream."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"the provider broke off the stream: {error_type}: {message}")
        self.error_type = error_type


def finish_reason(stop_reason: Any) -> str:
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def openai_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """Anthropic's usage object as OpenAI's (see the module invariants); its service tier
    is not in it (``service_tier``). A count that is not a token count is sent on as
    ``null`` (with the sums it is part of), for the gateway to flag and estimate."""
    fresh, read, written, output = (reported_count(usage, name) for name in USAGE_FIELDS[:4])
    thinking = reported_count(usage.get("output_tokens_details"), "thinking_tokens") or 0
    creation = usage.get("cache_creation")
    hour = reported_count(creation, "ephemeral_1h_input_tokens") or 0
    five = reported_count(creation, "ephemeral_5m_input_tokens") or 0
    if written is not None and isinstance(creation, dict):
        written = max(written, five + hour)
    prompt_details: dict[str, Any] = {"cached_tokens": read, "cache_write_tokens": written}
    if written and isinstance(creation, dict):
        prompt_details.update(cache_write_5m_tokens=written - hour, cache_write_1h_tokens=hour)
    prompt = summed(fresh, read, written)
    translated = {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": summed(prompt, output),
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {"reasoning_tokens": min(thinking, output or 0)},
    }
    searches = reported_count(usage.get("server_tool_use"), "web_search_requests")
    if searches:
        translated["server_tool_use"] = {"web_search_requests": searches}
    return translated


def service_tier(usage: Any) -> str | None:
    """The tier Anthropic's usage reports it served the request in (``standard``, ``priority``,
    ``batch``); None when absent or not a name."""
    tier = usage.get("service_tier") if isinstance(usage, dict) else None
    return tier if isinstance(tier, str) and tier else None


def _with_tier(document: dict[str, Any], usage: Any) -> dict[str, Any]:
    tier = service_tier(usage)
    if tier is not None:
        document["service_tier"] = tier
    return document


def _thinking_block(thinking: str, signature: Any) -> dict[str, Any]:
    return {"type": "thinking", "thinking": thinking, "signature": signature if isinstance(signature, str) else ""}


def chat_completion(message: Any, created: int) -> dict[str, Any]:
    """A Messages API ``message`` object as a ``chat.completion``; MalformedUpstreamAnswer if it is not one."""
    content = message.get("content") if isinstance(message, dict) and message.get("type") == "message" else None
    if not isinstance(content, list):
        raise MalformedUpstreamAnswer("the provider's answer is not an Anthropic message")
    texts: list[str] = []
    thoughts: list[str] = []
    kept: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text") or ""))
        elif kind == "thinking":
            thoughts.append(str(block.get("thinking") or ""))
            kept.append(_thinking_block(thoughts[-1], block.get("signature")))
        elif kind == "redacted_thinking":
            kept.append({"type": "redacted_thinking", "data": str(block.get("data") or "")})
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
    text = "".join(texts) if texts or not calls else None
    reply: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if calls:
        reply["tool_calls"] = calls
    if thoughts:
        reply["reasoning_content"] = "".join(thoughts)
    if kept:
        reply["thinking_blocks"] = kept
    usage = message.get("usage")
    document = {
        "id": message.get("id"),
        "object": "chat.completion",
        "created": created,
        "model": message.get("model"),
        "choices": [
            {"index": 0, "message": reply, "logprobs": None, "finish_reason": finish_reason(message.get("stop_reason"))}
        ],
        "usage": openai_usage(usage if isinstance(usage, dict) else {}),
    }
    return _with_tier(document, usage)


class StreamTranslator:
    """Turns Messages stream events, one at a time, into ``chat.completion.chunk`` objects."""

    def __init__(self, created: int) -> None:
        self.created = created
        self.id: str | None = None
        self.model: str | None = None
        self.usage: dict[str, Any] = {}
        self.stop_reason: str | None = None
        self.tool_index: dict[int, int] = {}  # content block index → OpenAI tool call index
        self.thinking: dict[Any, list[str]] = {}  # thinking block index → [text, signature], until it stops
        self.finished = False

    def take(self, event: Any) -> list[dict[str, Any]]:
        """The chunks one event produces; raises AnthropicStreamError for an error event and
        MalformedUpstreamAnswer for a malformed or out-of-order one."""
        event = upstream_object(event, "a stream event")
        kind = _field(event, "type", "stream event")
        if kind == "error":
            error = event.get("error")
            error = error if isinstance(error, dict) else {}
            raise AnthropicStreamError(str(error.get("type") or "error"), str(error.get("message") or ""))
        if kind == "ping":
            return []
        if kind == "message_start":
            return self._started(upstream_object(event.get("message"), "a message_start without a message"))
        if self.id is None:
            raise MalformedUpstreamAnswer(f"the provider's stream sent {kind!r} before message_start")
        if kind == "content_block_start":
            block = upstream_object(event.get("content_block"), "a content_block_start without a content_block")
            return self._block_started(_field(event, "index", kind), block)
        if kind == "content_block_delta":
            delta = upstream_object(event.get("delta"), "a content_block_delta without a delta")
            return self._delta(_field(event, "index", kind), delta)
        if kind == "message_delta":
            delta = upstream_object(event.get("delta"), "a message_delta without a delta")
            self.stop_reason = delta.get("stop_reason") or self.stop_reason
            self._count_usage(event.get("usage"))
            return []
        if kind == "message_stop":
            self.finished = True
            return [self._chunk({}, finish_reason(self.stop_reason)), self._usage_chunk()]
        index = event.get("index")
        if kind == "content_block_stop" and isinstance(index, int) and index in self.thinking:
            text, signature = self.thinking.pop(index)
            return [self._chunk({"thinking_blocks": [_thinking_block(text, signature)]})]
        return []  # content_block_stop, and event types added to the API later

    def _started(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        self.id = str(_field(message, "id", "message_start"))
        self.model = message.get("model")
        self._count_usage(message.get("usage"))
        return [self._chunk({"role": "assistant", "content": ""})]

    def _block_started(self, index: Any, block: dict[str, Any]) -> list[dict[str, Any]]:
        kind = _field(block, "type", "content block")
        if kind == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        if kind == "thinking":
            self.thinking[index] = [str(block.get("thinking") or ""), str(block.get("signature") or "")]
            return [self._chunk({"reasoning_content": block["thinking"]})] if block.get("thinking") else []
        if kind == "redacted_thinking":
            redacted = {"type": "redacted_thinking", "data": str(block.get("data") or "")}
            return [self._chunk({"thinking_blocks": [redacted]})]
        if kind == "tool_use":
            self.tool_index[index] = len(self.tool_index)
            call = {
                "index": self.tool_index[index],
                "id": _field(block, "id", "tool_use block"),
                "type": "function",
                "function": {"name": _field(block, "name", "tool_use block"), "arguments": ""},
            }
            return [self._chunk({"tool_calls": [call]})]
        return []

    def _delta(self, index: Any, delta: dict[str, Any]) -> list[dict[str, Any]]:
        kind = _field(delta, "type", "delta")
        if kind == "text_delta" and _field(delta, "text", kind):
            return [self._chunk({"content": delta["text"]})]
        if kind == "thinking_delta" and _field(delta, "thinking", kind):
            if index in self.thinking:
                self.thinking[index][0] += str(delta["thinking"])
            return [self._chunk({"reasoning_content": delta["thinking"]})]
        if kind == "signature_delta" and index in self.thinking:
            self.thinking[index][1] += str(_field(delta, "signature", kind) or "")
            return []
        if kind == "input_json_delta" and _field(delta, "partial_json", kind) and index in self.tool_index:
            call = {"index": self.tool_index[index], "function": {"arguments": delta["partial_json"]}}
            return [self._chunk({"tool_calls": [call]})]
        return []

    def _count_usage(self, usage: Any) -> None:
        """message_start has the input side, message_delta cumulative totals: later values win."""
        if not usage:
            return
        usage = upstream_object(usage, "a usage")
        self.usage.update({name: usage[name] for name in USAGE_FIELDS if usage.get(name) is not None})

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def _usage_chunk(self) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": openai_usage(self.usage),
        }
        return _with_tier(chunk, self.usage)


def _field(document: dict[str, Any], name: str, where: str) -> Any:
    """A field the provider must send; an ``index`` must also be usable as a key."""
    if name not in document:
        raise MalformedUpstreamAnswer(f"the provider sent a {where} without {name}")
    value = document[name]
    if name == "index" and isinstance(value, (dict, list)):
        raise MalformedUpstreamAnswer(f"the provider sent a {where} whose index is not a number")
    return value
