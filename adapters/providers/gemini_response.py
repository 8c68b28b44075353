"""Gemini ``GenerateContentResponse`` → OpenAI ``chat.completion`` / ``chat.completion.chunk``.

Invariants: usage is Gemini's own count (``prompt_tokens`` includes cached and
tool-use prompt tokens, ``completion_tokens`` includes thinking tokens, as OpenAI
reports them; a count that is not a token count is sent on as ``null``, with the sums
it is part of, for the gateway to flag, derive from ``totalTokenCount`` or estimate);
a stream is only declared finished when every candidate Gemini started has a
``finishReason`` — otherwise ``StreamBroken`` (a ``MalformedUpstreamAnswer``, so one of
``READ_FAILURES``) is raised instead of ``[DONE]``. Every other field read from Gemini is
checked where it is read (``MalformedUpstreamAnswer``): a KeyError or TypeError here is a
bug of ours, not Gemini's.
"""

import secrets
import time
from typing import Any
from uuid import uuid4

import orjson

from adapters.providers.base import upstream_object
from adapters.providers.openai_family import reported_count, summed
from domain.errors import MalformedUpstreamAnswer

_FILTERED = (
    "SAFETY",
    "RECITATION",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
    "IMAGE_RECITATION",
)
FINISH_REASONS = {"STOP": "stop", "MAX_TOKENS": "length", **{reason: "content_filter" for reason in _FILTERED}}


class StreamBroken(MalformedUpstreamAnswer):
    """Gemini ended or broke a stream without finishing it."""


def finish_reason(reason: str | None, called_tools: bool) -> str:
    """OpenAI's finish_reason; Gemini says STOP after function calls, OpenAI says tool_calls.
    Reasons OpenAI has no word for (OTHER, LANGUAGE, MALFORMED_FUNCTION_CALL, …) become ``stop``."""
    mapped = FINISH_REASONS.get(reason or "STOP", "stop")
    return "tool_calls" if called_tools and mapped == "stop" else mapped


def openai_usage(metadata: Any) -> dict[str, Any] | None:
    if not isinstance(metadata, dict):
        return None
    prompt = summed(reported_count(metadata, "promptTokenCount"), reported_count(metadata, "toolUsePromptTokenCount"))
    thoughts = reported_count(metadata, "thoughtsTokenCount")
    completion = summed(reported_count(metadata, "candidatesTokenCount"), thoughts)
    cached = reported_count(metadata, "cachedContentTokenCount")
    total = summed(prompt, completion)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        # with a part unreadable, Gemini's own total lets the gateway derive it
        "total_tokens": total if total is not None else reported_count(metadata, "totalTokenCount"),
        "prompt_tokens_details": {"cached_tokens": _within(cached, prompt)},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    }


def _within(cached: int | None, prompt: int | None) -> int | None:
    return min(cached, prompt) if cached is not None and prompt is not None else cached


def block_reason(response: dict[str, Any]) -> str | None:
    """Why Gemini refused the prompt itself (no candidates at all), if it did."""
    feedback = response.get("promptFeedback")
    if isinstance(feedback, dict) and feedback.get("blockReason") and not response.get("candidates"):
        return str(feedback["blockReason"])
    return None


class ToolCallIds:
    """Ids for the tool calls of one answer: ``call_<random>_<n>``, unique across turns."""

    def __init__(self) -> None:
        self.prefix = f"call_{secrets.token_hex(6)}_"
        self.count = 0

    def tool_call(self, part: dict[str, Any]) -> dict[str, Any]:
        call = part["functionCall"]
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            raise MalformedUpstreamAnswer("Gemini sent a functionCall without a name")
        call_id = call.get("id") or f"{self.prefix}{self.count}"
        self.count += 1
        tool_call: dict[str, Any] = {
            "id": call_id,
            "type": "function",
            "function": {"name": call["name"], "arguments": orjson.dumps(call.get("args") or {}).decode()},
        }
        if part.get("thoughtSignature"):  # as Google's own OpenAI layer carries it
            tool_call["extra_content"] = {"google": {"thought_signature": part["thoughtSignature"]}}
        return tool_call


def _read_parts(candidate: dict[str, Any], ids: ToolCallIds) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """Text, thought text and tool calls of one candidate."""
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    parts = upstream_object(candidate.get("content") or {}, "a candidate content").get("parts") or ()
    if not isinstance(parts, list | tuple):
        raise MalformedUpstreamAnswer("Gemini sent content.parts that is not a list")
    for part in parts:
        part = upstream_object(part, "a content part")
        if "functionCall" in part:
            calls.append(ids.tool_call(part))
        elif isinstance(part.get("text"), str):
            (thoughts if part.get("thought") else texts).append(part["text"])
    return texts, thoughts, calls


def _candidates(response: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    candidates = response.get("candidates") or []
    if not isinstance(candidates, list):
        raise MalformedUpstreamAnswer("candidates is not a list")
    return [(_index(candidate, position), candidate) for position, candidate in enumerate(candidates)]


def _index(candidate: Any, position: int) -> int:
    index = upstream_object(candidate, "a candidate").get("index", position)
    try:
        return int(index)
    except (TypeError, ValueError, OverflowError):
        raise MalformedUpstreamAnswer(f"Gemini sent a candidate index that is not a number: {index!r}") from None


def completion_document(response: dict[str, Any], model: str) -> dict[str, Any]:
    ids = ToolCallIds()
    choices: list[dict[str, Any]] = []
    for index, candidate in _candidates(response):
        texts, thoughts, calls = _read_parts(candidate, ids)
        message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
        if thoughts:
            message["reasoning_content"] = "".join(thoughts)
        if calls:
            message["tool_calls"] = calls
        choices.append(
            {
                "index": index,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(candidate.get("finishReason"), bool(calls)),
            }
        )
    if not choices:
        raise MalformedUpstreamAnswer("Gemini answered without candidates or a block reason")
    document = {
        "id": _completion_id(response),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": response.get("modelVersion") or model,
        "choices": sorted(choices, key=lambda c: c["index"]),
    }
    usage = openai_usage(response.get("usageMetadata"))
    if usage is not None:
        document["usage"] = usage
    return document


def _completion_id(response: dict[str, Any]) -> str:
    return f"chatcmpl-{response.get('responseId') or uuid4().hex}"


class ChunkTranslator:
    """Turns the fragments of one Gemini stream into OpenAI chunks, in order."""

    def __init__(self, first: dict[str, Any], model: str, choices: int) -> None:
        self.base = {
            "id": _completion_id(first),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": first.get("modelVersion") or model,
        }
        self.choices = choices
        self.ids = ToolCallIds()
        self.started: set[int] = set()
        self.finished: set[int] = set()
        self.called: dict[int, int] = {}  # choice → tool calls so far
        self.usage: dict[str, Any] | None = None

    def opening(self) -> list[dict[str, Any]]:
        return [
            self._chunk(
                [{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]
            )
            for i in range(self.choices)
        ]

    def take(self, fragment: Any) -> list[dict[str, Any]]:
        if not isinstance(fragment, dict):
            raise StreamBroken("Gemini sent a stream event that is not an object")
        if "error" in fragment:
            error = fragment["error"] if isinstance(fragment["error"], dict) else {}
            raise StreamBroken(f"Gemini failed mid-stream: {error.get('status') or error.get('code')}")
        if block_reason(fragment):
            raise StreamBroken(f"Gemini blocked the stream: {block_reason(fragment)}")
        if fragment.get("usageMetadata"):
            self.usage = fragment["usageMetadata"]
        chunks = []
        for index, candidate in _candidates(fragment):
            self.started.add(index)
            chunks.extend(self._candidate_chunks(index, candidate))
        return chunks

    def _candidate_chunks(self, index: int, candidate: dict[str, Any]) -> list[dict[str, Any]]:
        texts, thoughts, calls = _read_parts(candidate, self.ids)
        delta: dict[str, Any] = {}
        if "".join(thoughts):
            delta["reasoning_content"] = "".join(thoughts)
        if "".join(texts):  # Gemini may end with an empty text part that only carries a signature
            delta["content"] = "".join(texts)
        if calls:
            first = self.called.get(index, 0)
            delta["tool_calls"] = [{"index": first + k, **call} for k, call in enumerate(calls)]
            self.called[index] = first + len(calls)
        chunks = []
        if delta:
            chunks.append(self._chunk([{"index": index, "delta": delta, "logprobs": None, "finish_reason": None}]))
        if candidate.get("finishReason"):
            self.finished.add(index)
            reason = finish_reason(candidate["finishReason"], bool(self.called.get(index)))
            chunks.append(self._chunk([{"index": index, "delta": {}, "logprobs": None, "finish_reason": reason}]))
        return chunks

    def closing(self) -> list[dict[str, Any]]:
        """The usage chunk; raises StreamBroken if a candidate never finished."""
        if not self.finished or self.started - self.finished:
            raise StreamBroken("the Gemini stream ended before every candidate had a finishReason")
        usage = openai_usage(self.usage)
        return [self._chunk([], usage)] if usage is not None else []

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> dict[str, Any]:
        chunk = {**self.base, "choices": choices}
        if usage is not None:
            chunk["usage"] = usage
        return chunk
