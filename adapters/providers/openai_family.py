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

Beyond OpenAI's own fields, the usage object may carry (OpenRouter's, and what Tallyhub's
own adapters translate Anthropic's and Bedrock's counts into):
``prompt_tokens_details.cache_write_tokens`` (cache writes, inside ``prompt_tokens``),
``prompt_tokens_details.cache_write_5m_tokens`` / ``cache_write_1h_tokens`` (their split
by TTL), ``server_tool_use.web_search_requests`` (billed web searches) and
``service_tier``. OpenAI itself reports the service tier at the top of the answer and of
each chunk: the caller passes it.

Invariants of :func:`usage_from_openai_family`:

* no token is counted twice: one cache figure is taken, by a fixed precedence, never
  a sum of two reports of the same thing; reasoning is counted once, inside output;
* the result never exceeds what the provider reported: input is ``prompt_tokens``
  (or, without it, DeepSeek's hit + miss), cached input is at most input; output is
  ``completion_tokens``, plus reasoning only where ``total_tokens`` shows that the
  provider left reasoning out of ``completion_tokens`` (xAI), and reasoning is at
  most output; cache reads and writes together are at most input;
* how counts were obtained is flagged (``Usage.flags``, vocabulary in domain/usage.py):
  a count that is null, not an integer or negative is ``field_invalid`` and read as 0 —
  or, for ``prompt_tokens`` or ``completion_tokens`` (also when absent), derived from
  ``total_tokens`` and the other; a ``total_tokens`` missing or not equal to the parts is ``total_derived``
  (the parts are used); a cache-write total without its TTL split is priced as 5-minute
  writes, ``cache_write_ttl_assumed``.
"""

from decimal import Decimal, InvalidOperation
from typing import Any

from domain.errors import MalformedUpstreamAnswer
from domain.usage import MAX_SERVICE_TIER_LENGTH, Usage


def usage_from_openai_family(usage: dict[str, Any], service_tier: Any = None) -> Usage:
    """A family member's usage object → Usage (see the module docstring for the rules).

    ``service_tier`` is the tier the response reports (OpenAI sends it at the top of the
    answer and of each chunk, not inside ``usage``); a usage object's own ``service_tier``
    (Tallyhub's translation of Anthropic's) is the fallback. On OpenAI's own usage objects
    it reads exactly what OpenAI reports; it never raises on a malformed count (see
    ``flags``). A usage that is not a JSON object is the provider's garbled answer:
    ``MalformedUpstreamAnswer``.
    """
    if not isinstance(usage, dict):
        raise MalformedUpstreamAnswer("the provider sent a usage that is not a JSON object")
    plain = _plain_openai_usage(usage, service_tier)
    return plain if plain is not None else _usage_of_any_dialect(usage, service_tier)


# OpenAI's own prompt details: nothing in them but the cache reads is counted.
PLAIN_PROMPT_DETAILS = frozenset(("cached_tokens", "audio_tokens"))


def _plain_openai_usage(usage: dict[str, Any], service_tier: Any) -> Usage | None:
    """OpenAI's usage as OpenAI sends it, read in a few lookups (issue 21: once for every
    answer and stream); None for anything else, which ``_usage_of_any_dialect`` reads.

    Plain: prompt, completion and total are non-negative ints (``type(...) is int``: no
    bool, no float) with total = prompt + completion, no DeepSeek cache counts, no web
    searches, prompt details holding only cache reads (an int) and audio, reasoning (if
    any) an int. On exactly those the general reading sets no flag, takes no cache write
    and leaves completion as it is: both give the same ``Usage``
    (tests/property/test_openai_family_reading.py)."""
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if (
        type(prompt) is not int
        or type(completion) is not int
        or prompt < 0
        or completion < 0
        or usage.get("total_tokens") != prompt + completion
        or type(usage["total_tokens"]) is not int
        or "prompt_cache_hit_tokens" in usage
        or "server_tool_use" in usage
    ):
        return None
    cached = reasoning = 0
    details = usage.get("prompt_tokens_details")
    if details is not None:
        if type(details) is not dict or not details.keys() <= PLAIN_PROMPT_DETAILS:
            return None
        cached = details.get("cached_tokens", 0)
        if type(cached) is not int or cached < 0:
            return None
    details = usage.get("completion_tokens_details")
    if details is not None:
        if type(details) is not dict:
            return None
        reasoning = details.get("reasoning_tokens", 0)
        if type(reasoning) is not int or reasoning < 0:
            return None
    return Usage(
        input_tokens=prompt,
        cached_input_tokens=min(cached, prompt),
        output_tokens=completion,
        reasoning_tokens=min(reasoning, completion),
        service_tier=_tier(service_tier) or _tier(usage.get("service_tier")),
    )


def _usage_of_any_dialect(usage: dict[str, Any], service_tier: Any) -> Usage:
    """Any family member's usage object, by the rules of the module docstring."""
    reader = _Reader()
    prompt = _prompt_tokens(usage, reader)
    completion = reader.count(usage, "completion_tokens")
    total = reader.count(usage, "total_tokens")
    if prompt is None or completion is None:
        reader.flags.add("field_invalid")  # absent (or unreadable): derived from the total, else 0
    prompt, completion = _derived(prompt, completion, total)
    prompt_details = _details(usage, "prompt_tokens_details")
    cached = min(_cached_tokens(usage, prompt_details, reader), prompt)
    reasoning = reader.count(_details(usage, "completion_tokens_details"), "reasoning_tokens") or 0
    if _reasoning_outside_completion(total, prompt, completion, reasoning):
        completion += reasoning
    elif total is None or total != prompt + completion:
        reader.flags.add("total_derived")
    write_5m, write_1h = _cache_writes(prompt_details, prompt - cached, reader)
    return Usage(
        input_tokens=prompt,
        cached_input_tokens=cached,
        output_tokens=completion,
        reasoning_tokens=min(reasoning, completion),
        cache_write_5m_tokens=write_5m,
        cache_write_1h_tokens=write_1h,
        web_search_calls=reader.count(_details(usage, "server_tool_use"), "web_search_requests") or 0,
        service_tier=_tier(service_tier) or _tier(usage.get("service_tier")),
        flags=tuple(reader.flags),
    )


def reported_count(document: Any, name: str) -> int | None:
    """A count from another provider's usage report, for the OpenAI-shaped usage an adapter
    builds: absent or null is 0 (not reported), a non-negative integer (or a whole float) is
    itself, and anything else is None — unreadable: the adapter puts ``null`` in its place,
    which :func:`usage_from_openai_family` flags ``field_invalid`` and derives or leaves to
    the estimate (application/streams.py ``charged_usage``)."""
    value = document.get(name) if isinstance(document, dict) else None
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def summed(*counts: int | None) -> int | None:
    """The sum of counts; None when any of them is unreadable."""
    total = 0
    for count in counts:
        if count is None:
            return None
        total += count
    return total


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


class _Reader:
    """Reads counts and remembers how they were obtained (``Usage.flags``)."""

    def __init__(self) -> None:
        self.flags: set[str] = set()

    def count(self, document: dict[str, Any], key: str) -> int | None:
        """The count under ``key``; None when absent, or when null, non-integer or negative
        (then flagged ``field_invalid``)."""
        if key not in document:
            return None
        value = document[key]
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.flags.add("field_invalid")
            return None
        return value


def _prompt_tokens(usage: dict[str, Any], reader: _Reader) -> int | None:
    prompt = reader.count(usage, "prompt_tokens")
    if prompt is not None:
        return prompt
    hit, miss = reader.count(usage, "prompt_cache_hit_tokens"), reader.count(usage, "prompt_cache_miss_tokens")
    if hit is None and miss is None:
        return None
    return (hit or 0) + (miss or 0)


def _derived(prompt: int | None, completion: int | None, total: int | None) -> tuple[int, int]:
    """Prompt and completion, one unreadable count derived from ``total_tokens`` and the
    other (never negative); 0 when it cannot be."""
    if prompt is None and completion is not None and total is not None and total >= completion:
        return total - completion, completion
    if completion is None and prompt is not None and total is not None and total >= prompt:
        return prompt, total - prompt
    return prompt or 0, completion or 0


def _cached_tokens(usage: dict[str, Any], details: dict[str, Any], reader: _Reader) -> int:
    """DeepSeek's hit count, else OpenAI's ``prompt_tokens_details.cached_tokens``."""
    if usage.get("prompt_cache_hit_tokens") is not None:
        return reader.count(usage, "prompt_cache_hit_tokens") or 0
    return reader.count(details, "cached_tokens") or 0


def _cache_writes(details: dict[str, Any], room: int, reader: _Reader) -> tuple[int, int]:
    """(5-minute, 1-hour) cache writes within ``room`` (the prompt less its cache reads).

    ``cache_write_5m_tokens`` / ``cache_write_1h_tokens`` (Tallyhub's translation of
    Anthropic's ``cache_creation``) give the split; only ``cache_write_tokens`` (OpenRouter,
    Anthropic without ``cache_creation``): all 5-minute, flagged ``cache_write_ttl_assumed``."""
    five, hour = reader.count(details, "cache_write_5m_tokens"), reader.count(details, "cache_write_1h_tokens")
    if five is None and hour is None:
        five = reader.count(details, "cache_write_tokens")
        if five:
            reader.flags.add("cache_write_ttl_assumed")
    hour = min(hour or 0, room)
    return min(five or 0, room - hour), hour


def _tier(value: Any) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= MAX_SERVICE_TIER_LENGTH else None


def _details(usage: dict[str, Any], key: str) -> dict[str, Any]:
    details = usage.get(key)
    return details if isinstance(details, dict) else {}


def _reasoning_outside_completion(total: int | None, prompt: int, completion: int, reasoning: int) -> bool:
    """xAI's dialect: ``total_tokens`` = prompt + completion + reasoning, reasoning > 0."""
    if not reasoning or total is None:
        return False
    return total == prompt + completion + reasoning


def _detail_text(detail: Any) -> str:
    if not isinstance(detail, dict):
        return ""
    for key in ("text", "summary"):  # "reasoning.encrypted" details carry no countable text
        text = detail.get(key)
        if isinstance(text, str):
            return text
    return ""
