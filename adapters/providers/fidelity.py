"""The OpenAI-compatible conventions that carry Anthropic's prompt caching and extended
thinking through the gateway's chat body (LiteLLM's and OpenRouter's), and the one table
that turns ``reasoning_effort`` into a thinking budget. Pure functions, no I/O.

Conventions (what a chat body may hold, and what the translators read):
- ``cache_control`` (``{"type": "ephemeral"}``, optionally ``"ttl": "5m" | "1h"``) on a
  content part, on a message (it marks the message's last block: how a string content is
  marked), on a ``tool_calls`` entry and on a ``tools`` entry. It is passed on as sent:
  the provider judges it (Anthropic allows at most 4 breakpoints and answers 400 beyond);
- ``thinking_blocks`` on an assistant message, in the order the model produced them:
  ``{"type": "thinking", "thinking", "signature"}`` and ``{"type": "redacted_thinking",
  "data"}``; answers from Anthropic and Bedrock carry them the same way, so a client sends
  them back unchanged.

Invariant of the budget table: a thinking budget never makes a request's worst case larger
than the caller's max tokens, which the hold was priced from. Anthropic counts thinking
within ``max_tokens`` (as OpenAI counts reasoning within ``max_completion_tokens``), so
the budget is the table's, lowered to ``max_tokens - 1`` when that is smaller; below
Anthropic's minimum budget (CLAUDE_MIN_BUDGET) the request is refused.
"""

from typing import Any

from domain.errors import InvalidRequest

EFFORTS = ("none", "minimal", "low", "medium", "high")
# Thinking budgets in tokens per reasoning_effort (LiteLLM's defaults; Anthropic's minimum is 1024).
CLAUDE_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 2048, "high": 4096}
GEMINI_BUDGETS = {"none": 0, "minimal": 512, "low": 1024, "medium": 2048, "high": 4096}
CLAUDE_MIN_BUDGET = 1024


def reasoning_effort(body: dict[str, Any]) -> str | None:
    """The body's ``reasoning_effort``, checked against EFFORTS; None when absent."""
    effort = body.get("reasoning_effort")
    if effort is None:
        return None
    if effort not in EFFORTS:
        raise InvalidRequest(f"'reasoning_effort' must be one of {', '.join(EFFORTS)}", param="reasoning_effort")
    return str(effort)


def claude_thinking(body: dict[str, Any], max_tokens: int, provider: str) -> dict[str, Any] | None:
    """Anthropic's ``thinking`` for a chat body: the caller's own ``thinking`` when given,
    else the one ``reasoning_effort`` asks for (CLAUDE_BUDGETS within ``max_tokens``)."""
    explicit = body.get("thinking")
    if explicit is not None:
        if not isinstance(explicit, dict):
            raise InvalidRequest("'thinking' must be an object", param="thinking")
        return explicit
    effort = reasoning_effort(body)
    if effort is None or effort == "none":
        return None
    budget = min(CLAUDE_BUDGETS[effort], max_tokens - 1)
    if budget < CLAUDE_MIN_BUDGET:
        raise InvalidRequest(
            f"reasoning_effort: {provider}'s smallest thinking budget is {CLAUDE_MIN_BUDGET} tokens and it counts "
            f"within max_tokens ({max_tokens}); raise max_tokens above {CLAUDE_MIN_BUDGET} or leave "
            "reasoning_effort out",
            param="reasoning_effort",
        )
    return {"type": "enabled", "budget_tokens": budget}


def refuse_sampling_with_thinking(body: dict[str, Any], thinking: dict[str, Any] | None, provider: str) -> None:
    """Anthropic's rules for a request that thinks because of ``reasoning_effort``:
    temperature 1 or unset, no top_k, top_p 0.95–1 or unset, and no forced tool use.
    Refused here, naming the field. A caller's own ``thinking`` passes as sent: the
    provider judges it, as it would without the gateway."""
    if thinking is None or body.get("thinking") is not None:
        return
    temperature, top_p = body.get("temperature"), body.get("top_p")
    if temperature is not None and temperature != 1:
        raise InvalidRequest(
            f"temperature: {provider} models with extended thinking (thinking or reasoning_effort) accept only "
            "temperature 1; leave it out",
            param="temperature",
        )
    if body.get("top_k") is not None:
        raise InvalidRequest(f"top_k: {provider} models with extended thinking do not accept top_k", param="top_k")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0.95 <= top_p <= 1):
        raise InvalidRequest(
            f"top_p: {provider} models with extended thinking accept top_p between 0.95 and 1 only", param="top_p"
        )
    choice = body.get("tool_choice")
    if choice == "required" or (isinstance(choice, dict) and choice.get("type") == "function"):
        raise InvalidRequest(
            f"tool_choice: {provider} models with extended thinking cannot be forced to use a tool; "
            "use 'auto' or 'none'",
            param="tool_choice",
        )


def cache_mark(source: Any, where: str) -> dict[str, Any] | None:
    """The ``cache_control`` of a part, message or tool (None when unmarked); an object, as sent."""
    mark = source.get("cache_control") if isinstance(source, dict) else None
    if mark is None:
        return None
    if not isinstance(mark, dict):
        raise InvalidRequest(f"{where}.cache_control must be an object", param=f"{where}.cache_control")
    return mark


def thinking_blocks(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """An assistant message's ``thinking_blocks``, each exactly as the model produced it
    (only its own fields: a provider refuses a modified block). A thinking block with an
    empty signature (what the gateway shows for another provider's reasoning) is left out."""
    blocks = message.get("thinking_blocks")
    if blocks is None:
        return []
    if not isinstance(blocks, list):
        raise InvalidRequest(f"{where}.thinking_blocks must be an array", param=f"{where}.thinking_blocks")
    kept = []
    for number, block in enumerate(blocks):
        at = f"{where}.thinking_blocks.{number}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "thinking" and isinstance(block.get("thinking"), str) and isinstance(block.get("signature"), str):
            if not block["signature"]:  # reasoning another provider produced: nothing can verify it
                continue
            kept.append({"type": "thinking", "thinking": block["thinking"], "signature": block["signature"]})
        elif kind == "redacted_thinking" and isinstance(block.get("data"), str):
            kept.append({"type": "redacted_thinking", "data": block["data"]})
        else:
            raise InvalidRequest(
                f"{at}: a thinking block is {{type: thinking, thinking, signature}} or "
                "{type: redacted_thinking, data}",
                param=at,
            )
    return kept


def without_anthropic_conventions(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` without ``cache_control`` marks (on messages, parts, tool calls and tools) and
    ``thinking_blocks``: for OpenAI's own API, which caches by itself and knows neither. The
    body itself when it holds none (the usual case costs no copy)."""
    messages, tools = body.get("messages"), body.get("tools")
    if not _holds_conventions(messages) and not _holds_conventions(tools):
        return body
    stripped = dict(body)
    if isinstance(messages, list):
        stripped["messages"] = [_stripped_message(message) for message in messages]
    if isinstance(tools, list):
        stripped["tools"] = [_unmarked(tool) for tool in tools]
    return stripped


def _holds_conventions(items: Any) -> bool:
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict):
            continue
        if "cache_control" in item or "thinking_blocks" in item:
            return True
        nested = [part for key in ("content", "tool_calls") for part in _listed(item.get(key))]
        if any(isinstance(part, dict) and "cache_control" in part for part in nested):
            return True
    return False


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _stripped_message(message: Any) -> Any:
    if not isinstance(message, dict):
        return message
    kept = {key: value for key, value in message.items() if key not in ("cache_control", "thinking_blocks")}
    for key in ("content", "tool_calls"):
        if isinstance(kept.get(key), list):
            kept[key] = [_unmarked(part) for part in kept[key]]
    return kept


def _unmarked(part: Any) -> Any:
    if not isinstance(part, dict) or "cache_control" not in part:
        return part
    return {key: value for key, value in part.items() if key != "cache_control"}
