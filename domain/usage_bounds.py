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
- images: the images it asked for;
- and every count at most ``domain.bounds.MAX_TOKENS`` (``MAX_IMAGES``), so no event
  carries a count the read models cannot store.

Usage above its bound is charged at the bound and marked ``source="clamped"``; the
report as the provider sent it is kept on the request's record (``reported_usage``)
and listed by ``tallyhub reconcile``.
"""

from dataclasses import dataclass, replace

from domain.bounds import MAX_IMAGES, MAX_TOKENS
from domain.pricing import ModelPrice, worst_case_usage
from domain.usage import Usage

INPUT_OVERHEAD_TOKENS = 4096
COUNTS = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens", "images")


@dataclass(frozen=True, slots=True)
class UsageBound:
    input_tokens: int
    output_tokens: int
    images: int


def usage_bound(
    prompt_bytes: int, max_output_tokens: int | None, choices: int, price: ModelPrice | None, images: int = 0
) -> UsageBound:
    """The most a request of this shape could use; ``price`` None: a model without a price,
    whose output is bounded only by the request's own ``max_tokens``."""
    if price is None:
        output = (max_output_tokens or MAX_TOKENS) * max(choices, 1)
        worst = Usage(input_tokens=max(prompt_bytes, 0), output_tokens=min(output, MAX_TOKENS), images=max(images, 0))
    else:
        worst = worst_case_usage(prompt_bytes, max_output_tokens, choices, price, images)
    return UsageBound(
        input_tokens=min(worst.input_tokens + INPUT_OVERHEAD_TOKENS, MAX_TOKENS),
        output_tokens=min(worst.output_tokens, MAX_TOKENS),
        images=min(worst.images, MAX_IMAGES),
    )


def clamp_usage(usage: Usage, bound: UsageBound) -> Usage:
    """``usage`` itself when it is within ``bound``; otherwise each count held to its bound
    (cached input within input, reasoning within output) and ``source="clamped"``."""
    if (
        usage.input_tokens <= bound.input_tokens
        and usage.output_tokens <= bound.output_tokens
        and usage.images <= bound.images
    ):
        return usage
    input_tokens = min(usage.input_tokens, bound.input_tokens)
    output_tokens = min(usage.output_tokens, bound.output_tokens)
    return replace(
        usage,
        input_tokens=input_tokens,
        cached_input_tokens=min(usage.cached_input_tokens, input_tokens),
        output_tokens=output_tokens,
        reasoning_tokens=min(usage.reasoning_tokens, output_tokens),
        images=min(usage.images, bound.images),
        source="clamped",
    )


def reported(usage: Usage) -> dict[str, str]:
    """A usage report kept in full: counts as decimal text (JSON readers of the event log
    may not take integers beyond 64 bits), and where it came from."""
    return {**{name: str(getattr(usage, name)) for name in COUNTS}, "source": usage.source}
