"""What one request could have used, and usage held to it.

A provider's usage report is an input from outside: a buggy or hostile upstream can
claim 10^20 output tokens for a request that asked for five. Invariant kept here: the
usage a request is charged for never exceeds what the request allowed —

- input tokens: the request's bound on its prompt (the UTF-8 bytes of its body, an
  image part counted at a fixed bound: see ``worst_case_usage``) plus
  ``INPUT_OVERHEAD_TOKENS`` for what a provider adds around the prompt itself (chat
  templates, the system prompts of Anthropic's tool use and built-in tools);
- output tokens: the request's ``max_tokens`` (or the model's output limit from the
  price book, ``max_output_tokens``, when it set none) for each of its choices;
- images: the images it asked for; web search calls: ``MAX_WEB_SEARCH_CALLS``;
- cache reads and cache writes within the input tokens (reads kept first, then
  5-minute writes, then 1-hour writes), reasoning within output;
- and every count at most ``domain.bounds.MAX_TOKENS`` (``MAX_IMAGES``), so no event
  carries a count the read models cannot store.

Usage above its bound is charged at the bound and marked ``source="clamped"``; the
report as the provider sent it is kept on the request's record (``reported_usage``)
and listed by ``tallyhub reconcile``.
"""

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from domain.bounds import MAX_IMAGES, MAX_TOKENS, MAX_WEB_SEARCH_CALLS
from domain.pricing import ModelPrice
from domain.slots_init import slots_init
from domain.usage import Usage

INPUT_OVERHEAD_TOKENS = 4096
COUNTS = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens", "images")
NEWER_COUNTS = ("cache_write_5m_tokens", "cache_write_1h_tokens", "web_search_calls")


@slots_init  # built on every settlement: domain/slots_init.py
@dataclass(frozen=True, slots=True)
class UsageBound:
    input_tokens: int
    output_tokens: int
    images: int
    web_search_calls: int = MAX_WEB_SEARCH_CALLS


def usage_bound(
    prompt_bytes: int, max_output_tokens: int | None, choices: int, price: ModelPrice | None, images: int = 0
) -> UsageBound:
    """The most a request of this shape could use; ``price`` None: a model without a price,
    whose output is bounded only by the request's own ``max_tokens``."""
    if price is None:
        cap = max_output_tokens or MAX_TOKENS
    else:
        cap = max_output_tokens if max_output_tokens is not None else price.max_output_tokens
    return UsageBound(  # the same bounds worst_case_usage prices (its input may sit lower, in a dearer tier)
        input_tokens=min(max(prompt_bytes, 0) + INPUT_OVERHEAD_TOKENS, MAX_TOKENS),
        output_tokens=min(cap * max(choices, 1), MAX_TOKENS),
        images=min(max(images, 0), MAX_IMAGES),
    )


def clamp_usage(usage: Usage, bound: UsageBound) -> Usage:
    """``usage`` itself when it is within ``bound``; otherwise each count held to its bound
    (cached input within input, reasoning within output) and ``source="clamped"``."""
    if (
        usage.input_tokens <= bound.input_tokens
        and usage.output_tokens <= bound.output_tokens
        and usage.images <= bound.images
        and usage.web_search_calls <= bound.web_search_calls
    ):
        return usage
    input_tokens = min(usage.input_tokens, bound.input_tokens)
    output_tokens = min(usage.output_tokens, bound.output_tokens)
    cached = min(usage.cached_input_tokens, input_tokens)
    write_5m = min(usage.cache_write_5m_tokens, input_tokens - cached)
    write_1h = min(usage.cache_write_1h_tokens, input_tokens - cached - write_5m)
    return replace(
        usage,
        input_tokens=input_tokens,
        cached_input_tokens=cached,
        cache_write_5m_tokens=write_5m,
        cache_write_1h_tokens=write_1h,
        output_tokens=output_tokens,
        reasoning_tokens=min(usage.reasoning_tokens, output_tokens),
        images=min(usage.images, bound.images),
        web_search_calls=min(usage.web_search_calls, bound.web_search_calls),
        source="clamped",
    )


def reported(usage: Usage) -> dict[str, Any]:
    """A usage report kept in full: counts as decimal text (JSON readers of the event log
    may not take integers beyond 64 bits), and where it came from; the newer counts, the
    service tier and the flags only when set (an older report is stored as it always was)."""
    data: dict[str, Any] = {**{name: str(getattr(usage, name)) for name in COUNTS}, "source": usage.source}
    for name in NEWER_COUNTS:
        if getattr(usage, name):
            data[name] = str(getattr(usage, name))
    if usage.service_tier is not None:
        data["service_tier"] = usage.service_tier
    if usage.flags:
        data["flags"] = list(usage.flags)
    return data


def from_reported(data: Mapping[str, Any]) -> Usage:
    """``reported`` read back: a Usage with every count the report held."""
    counts = {name: int(data.get(name, 0)) for name in (*COUNTS, *NEWER_COUNTS)}
    return Usage(
        **counts,
        source=data.get("source", "provider"),
        service_tier=data.get("service_tier"),
        flags=tuple(data.get("flags") or ()),
    )
