"""Bedrock Converse answers → OpenAI ``chat.completion`` documents and chunks.

Usage keeps OpenAI's convention that ``prompt_tokens`` includes cached input:
``prompt_tokens = inputTokens + cacheReadInputTokens + cacheWriteInputTokens`` and
``prompt_tokens_details.cached_tokens = cacheReadInputTokens`` (cache writes are also
shown as ``cache_write_tokens``, as OpenRouter does, and their split by TTL from
``cacheDetails`` as ``cache_write_5m_tokens`` / ``cache_write_1h_tokens``; without
``cacheDetails`` the writes are priced as 5-minute ones and flagged). A count that is not
a token count is sent on as ``null``, with the sums it is part of, for the gateway to
flag, derive from ``totalTokens`` or estimate. A Converse answer that does not
have the documented shape raises ``MalformedUpstreamAnswer`` (one of ``READ_FAILURES``),
each field checked where it is read: a KeyError or TypeError here is a bug of ours.

``reasoningContent`` blocks become ``reasoning_content`` (their text) and, as the Anthropic
adapter gives them, ``thinking_blocks``: ``reasoningText`` with its ``signature`` → ``{"type":
"thinking", "thinking", "signature"}``, ``redactedContent`` → ``{"type":
"redacted_thinking", "data"}`` (adapters/providers/fidelity.py). In a stream, each reasoning
block comes whole, with its signature, as one ``thinking_blocks`` delta when it stops.
"""

from typing import Any

import orjson

from adapters.providers.base import upstream_object
from adapters.providers.openai_family import reported_count, summed
from domain.errors import MalformedUpstreamAnswer

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}


def finish_reason(stop_reason: Any) -> str:
    return FINISH_REASONS.get(stop_reason, "stop")


def openai_usage(usage: Any) -> dict[str, Any]:
    if not isinstance(usage, dict):
        raise MalformedUpstreamAnswer("Bedrock sent no usage object")
    fresh, output = reported_count(usage, "inputTokens"), reported_count(usage, "outputTokens")
    read, write = reported_count(usage, "cacheReadInputTokens"), reported_count(usage, "cacheWriteInputTokens")
    details: dict[str, Any] = {"cached_tokens": read, "cache_write_tokens": write}
    split = _cache_split(usage.get("cacheDetails"))
    if split is not None and write:
        hour = min(split["1h"], write)
        details.update(cache_write_5m_tokens=write - hour, cache_write_1h_tokens=hour)
    prompt = summed(fresh, read, write)
    total = summed(prompt, output)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        # with a part unreadable, Bedrock's own total lets the gateway derive it
        "total_tokens": total if total is not None else reported_count(usage, "totalTokens"),
        "prompt_tokens_details": details,
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def _cache_split(details: Any) -> dict[str, int] | None:
    """``cacheDetails`` (``[{"ttl": "1h", "inputTokens": n}, …]``) as tokens per TTL; None when absent."""
    if not isinstance(details, list) or not details:
        return None
    split = {"5m": 0, "1h": 0}
    for detail in details:
        detail = upstream_object(detail, "a cacheDetails entry")
        if detail.get("ttl") in split:
            split[detail["ttl"]] += reported_count(detail, "inputTokens") or 0
    return split


def completion_document(answer: Any, *, completion_id: str, model: str, created: int) -> bytes:
    """One OpenAI ``chat.completion`` for a Converse answer."""
    blocks = _content_of(answer)
    texts, reasoning, calls, thoughts = [], [], [], []
    for block in blocks:
        block = upstream_object(block, "a content block")
        if "text" in block:
            texts.append(str(block["text"]))
        elif "toolUse" in block:
            use = upstream_object(block["toolUse"], "a toolUse block")
            calls.append(_tool_call(use.get("toolUseId"), use.get("name"), orjson.dumps(use.get("input", {})).decode()))
        elif "reasoningContent" in block:
            content = upstream_object(block["reasoningContent"], "a reasoningContent block")
            reasoning_text = upstream_object(content.get("reasoningText") or {}, "a reasoningText")
            text = reasoning_text.get("text")
            if isinstance(text, str):
                reasoning.append(text)
                thoughts.append(_thinking_block(text, reasoning_text.get("signature")))
            elif isinstance(content.get("redactedContent"), str):
                thoughts.append({"type": "redacted_thinking", "data": content["redactedContent"]})
    if "stopReason" not in answer:
        raise MalformedUpstreamAnswer("Bedrock sent an answer without output.message.content and stopReason")
    stop_reason = answer["stopReason"]
    usage = openai_usage(answer.get("usage"))
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
    }
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if thoughts:
        message["thinking_blocks"] = thoughts
    if calls:
        message["tool_calls"] = calls
    document = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason(stop_reason)}],
        "usage": usage,
    }
    return orjson.dumps(document)


def _thinking_block(text: str, signature: Any) -> dict[str, Any]:
    return {"type": "thinking", "thinking": text, "signature": signature if isinstance(signature, str) else ""}


def _content_of(answer: Any) -> list[Any]:
    """``output.message.content`` of a Converse answer."""
    output = answer.get("output") if isinstance(answer, dict) else None
    message = output.get("message") if isinstance(output, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        raise MalformedUpstreamAnswer("Bedrock sent an answer without output.message.content and stopReason")
    return content


def _tool_call(call_id: Any, name: Any, arguments: str) -> dict[str, Any]:
    if not isinstance(call_id, str) or not isinstance(name, str):
        raise MalformedUpstreamAnswer("Bedrock sent a toolUse block without toolUseId or name")
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


class ConverseStreamTranslator:
    """ConverseStream events → OpenAI chunks: role, deltas, finish, usage (``choices: []``).

    ``finished`` is true once both ``messageStop`` and ``metadata`` arrived: only then
    did Bedrock end the answer normally.
    """

    def __init__(self, *, completion_id: str, model: str, created: int) -> None:
        self._base = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}
        self._tool_index: dict[int, int] = {}
        self._reasoning: dict[int, list[str]] = {}  # block index → [text, signature], until the block stops
        self._stopped = False
        self._reported = False

    @property
    def finished(self) -> bool:
        return self._stopped and self._reported

    def chunks(self, event_type: str, event: dict[str, Any]) -> list[dict[str, Any]]:
        """The chunks one event produces; MalformedUpstreamAnswer if it lacks what its type needs."""
        if event_type == "messageStart":
            return [self._choice({"role": "assistant", "content": ""})]
        if event_type == "contentBlockStart":
            use = upstream_object(event.get("start") or {}, "a contentBlockStart").get("toolUse")
            if use is None:
                return []
            use = upstream_object(use, "a toolUse start")
            index = self._tool_index.setdefault(_block_index(event, event_type), len(self._tool_index))
            call = _tool_call(use.get("toolUseId"), use.get("name"), "")
            return [self._choice({"tool_calls": [{"index": index, **call}]})]
        if event_type == "contentBlockDelta":
            delta = upstream_object(event.get("delta"), "a contentBlockDelta without a delta")
            return self._delta(_block_index(event, event_type), delta)
        if event_type == "messageStop":
            if "stopReason" not in event:
                raise MalformedUpstreamAnswer("Bedrock sent a malformed messageStop event")
            self._stopped = True
            return [self._choice({}, finish_reason(event["stopReason"]))]
        if event_type == "contentBlockStop":
            stopped = event.get("contentBlockIndex")
            if isinstance(stopped, int) and stopped in self._reasoning:
                text, signature = self._reasoning.pop(stopped)
                return [self._choice({"thinking_blocks": [_thinking_block(text, signature)]})]
            return []
        if event_type == "metadata":
            if "usage" not in event:
                raise MalformedUpstreamAnswer("Bedrock sent a malformed metadata event")
            self._reported = True
            return [{**self._base, "choices": [], "usage": openai_usage(event["usage"])}]
        return []  # events this adapter does not relay

    def _delta(self, block_index: int, delta: dict[str, Any]) -> list[dict[str, Any]]:
        if "text" in delta:
            return [self._choice({"content": str(delta["text"])})] if delta["text"] else []
        if "toolUse" in delta:
            if block_index not in self._tool_index:
                raise MalformedUpstreamAnswer("Bedrock sent toolUse input for a block it never started")
            use = upstream_object(delta["toolUse"], "a toolUse delta")
            if "input" not in use:
                raise MalformedUpstreamAnswer("Bedrock sent a toolUse delta without input")
            fragment = {"index": self._tool_index[block_index], "function": {"arguments": str(use["input"])}}
            return [self._choice({"tool_calls": [fragment]})]
        reasoning = upstream_object(delta.get("reasoningContent") or {}, "a reasoningContent delta")
        if isinstance(reasoning.get("redactedContent"), str):
            return [
                self._choice({"thinking_blocks": [{"type": "redacted_thinking", "data": reasoning["redactedContent"]}]})
            ]
        text, signature = reasoning.get("text"), reasoning.get("signature")
        if isinstance(text, str) or isinstance(signature, str):
            block = self._reasoning.setdefault(block_index, ["", ""])
            block[0] += text if isinstance(text, str) else ""
            block[1] += signature if isinstance(signature, str) else ""
        if isinstance(text, str) and text:
            return [self._choice({"reasoning_content": text})]
        return []

    def _choice(self, delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
        return {**self._base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}]}


def _block_index(event: dict[str, Any], event_type: str) -> int:
    index = event.get("contentBlockIndex")
    if not isinstance(index, int):
        raise MalformedUpstreamAnswer(f"Bedrock sent a {event_type} event without contentBlockIndex")
    return index
