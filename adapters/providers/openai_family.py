"""Usage quirks of the OpenAI-compatible family: DeepSeek, OpenRouter, xAI, Doubao
(Volcengine Ark), Poe — and any other provider that speaks OpenAI's chat format.

They all send OpenAI's ``usage`` object, each with its own dialect:

* DeepSeek reports prompt caching as ``prompt_cache_hit_tokens`` +
  ``prompt_cache_miss_tokens`` (their sum is ``prompt_tokens``); newer responses
  repeat the hit count as ``prompt_tokens_details.cached_tokens``. Reasoning is
  ``completion_tokens_details.reasoning_tokens``, inside ``completion_tokens``.
* OpenRouter adds ``cost`` (credits, a JSON number) and ``cost_details``, and
  ``prompt_tokens_details.cached_tokens`` / ``cache_write_tokens``.
* xAI reports ``prompt_tokens_details.cached_tokens`` and
  ``completion_tokens_details.reasoning_tokens`` — but its reasoning tokens are
  *not* part of ``completion_tokens``; its ``total_tokens`` is
  prompt + completion + reasoning.
* Doubao and Poe use OpenAI's shape as it is.

Invariants of :func:`usage_from_openai_family`:

* no token is counted twice: one cache figure is taken, by a fixed precedence, never
  a sum of two reports of the same thing; reasoning is counted once, inside output;
* the result never exceeds what the provider reported: input is ``prompt_tokens``
  (or, without it, DeepSeek's hit + miss), cached input is at most input; output is
  ``completion_tokens``, plus reasoning only where ``total_tokens`` shows that the
  provider left reasoning out of ``completion_tokens`` (xAI), and reasoning is at
  most output.
"""

from decimal import Decimal, InvalidOperation
from typing import Any

from domain.errors import MalformedUpstreamAnswer
from domain.usage import Usage


def usage_from_openai_family(usage: dict[str, Any]) -> Usage:
    """A family member's usage object → Usage (see the module docstring for the rules).

    On OpenAI's own usage objects it reads exactly what OpenAI reports; it never raises
    on a malformed count (it counts 0 for it). A usage that is not a JSON object is the
    provider's garbled answer: ``MalformedUpstreamAnswer``.
    """
    if not isinstance(usage, dict):
        raise MalformedUpstreamAnswer("the provider sent a usage that is not a JSON object")
    prompt = _prompt_tokens(usage)
    cached = min(_cached_tokens(usage), prompt)
    completion = _count(usage.get("completion_tokens"))
    reasoning = _count(_details(usage, "completion_tokens_details").get("reasoning_tokens"))
    if _reasoning_outside_completion(usage, prompt, completion, reasoning):
        completion += reasoning
    return Usage(
        input_tokens=prompt,
        cached_input_tokens=cached,
        output_tokens=completion,
        reasoning_tokens=min(reasoning, completion),
    )


def reported_cost(usage: dict[str, Any]) -> Decimal | None:
    """What the provider says the call cost its account (OpenRouter's ``usage.cost``, in
    its credits), exactly as sent; ``None`` when absent or not a number.

    For reconciliation and display only: Tallyhub prices usage with its own price book
    and never takes a provider's figure as the charge.
    """
    value = usage.get("cost")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        cost = Decimal(str(value))  # str() keeps the JSON digits; no float arithmetic
    except InvalidOperation:
        return None
    return cost if cost.is_finite() and cost >= 0 else None


def reasoning_text(delta_or_message: Any) -> str:
    """The reasoning text of a stream delta or a message, for counting its characters.

    DeepSeek (and xAI, Doubao) send ``reasoning_content``; OpenRouter sends ``reasoning``
    and, for some models, only ``reasoning_details``. Some relays send the same text
    under two names, so the first non-empty source wins: never counted twice. Details that
    are a number (nothing to read text from) are the provider's garbled answer:
    ``MalformedUpstreamAnswer``.
    """
    if not isinstance(delta_or_message, dict):
        return ""
    for key in ("reasoning_content", "reasoning"):
        text = delta_or_message.get(key)
        if isinstance(text, str) and text:
            return text
    details = delta_or_message.get("reasoning_details")
    if not details:
        return ""
    if not isinstance(details, (list, dict, str)):
        raise MalformedUpstreamAnswer("the provider sent reasoning_details that are a number")
    return "".join(_detail_text(detail) for detail in details)


def _prompt_tokens(usage: dict[str, Any]) -> int:
    if usage.get("prompt_tokens") is not None:
        return _count(usage["prompt_tokens"])
    return _count(usage.get("prompt_cache_hit_tokens")) + _count(usage.get("prompt_cache_miss_tokens"))


def _cached_tokens(usage: dict[str, Any]) -> int:
    """DeepSeek's hit count, else OpenAI's ``prompt_tokens_details.cached_tokens``."""
    if usage.get("prompt_cache_hit_tokens") is not None:
        return _count(usage["prompt_cache_hit_tokens"])
    return _count(_details(usage, "prompt_tokens_details").get("cached_tokens"))


def _details(usage: dict[str, Any], key: str) -> dict[str, Any]:
    details = usage.get(key)
    return details if isinstance(details, dict) else {}


def _reasoning_outside_completion(usage: dict[str, Any], prompt: int, completion: int, reasoning: int) -> bool:
    """xAI's dialect: ``total_tokens`` = prompt + completion + reasoning, reasoning > 0."""
    if reasoning <= 0 or usage.get("total_tokens") is None:
        return False
    return _count(usage["total_tokens"]) == prompt + completion + reasoning


def _detail_text(detail: Any) -> str:
    if not isinstance(detail, dict):
        return ""
    for key in ("text", "summary"):  # "reasoning.encrypted" details carry no countable text
        text = detail.get(key)
        if isinstance(text, str):
            return text
    return ""


def _count(value: Any) -> int:
    """A token count as sent; anything that is not a non-negative integer counts as 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and value > 0 else 0
