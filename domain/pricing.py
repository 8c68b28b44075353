"""Pricing is pure arithmetic on integers.

The one rounding rule: a charge is computed exactly as a sum of
``tokens × rate`` terms (rates are nanocredits per 1,000,000 tokens), divided by
1,000,000 once and rounded half up to a whole nanocredit; per-image and
per-request fees are whole nanocredits and are added after that single rounding.
Nothing else in Tallyhub rounds money. The same rule prices what the provider
charges the operator (``provider_cost``), so margins are exact too.

A price is bounded (``domain/bounds.py``): every rate, its own and its
``provider_cost``'s, is a whole number of nanocredits from 0 to ``MAX_RATE``, and
``max_output_tokens`` is from 1 to ``MAX_TOKENS``; anything else is refused with
``InvalidPrice`` naming the field, so no price book holds a rate that could price a
request past what the read models store.
"""

from dataclasses import asdict, dataclass
from typing import Any

from domain.bounds import MAX_RATE, MAX_TOKENS, within
from domain.errors import InvalidRequest
from domain.money import Nanocredits, format_credits
from domain.usage import Usage

TOKENS_PER_RATE_UNIT = 1_000_000
DEFAULT_OUTPUT_CAP = 4096
RATE_FIELDS = ("input", "output", "cached_input", "reasoning", "per_image", "per_request")


class InvalidPrice(InvalidRequest, ValueError):
    """A rate or output cap outside what a price may be; ``param`` names the field."""


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """Sell rates for one model, in nanocredits per 1M tokens (or per image / request).

    ``cached_input`` defaults to the input rate and ``reasoning`` to the output rate;
    ``max_output_tokens`` is the output cap used for the worst-case hold when a request
    does not set ``max_tokens``; ``provider_cost`` is what the provider charges the
    operator for the same usage (same fields, no cap), for margins.
    """

    input: int
    output: int
    cached_input: int | None = None
    reasoning: int | None = None
    per_image: int = 0
    per_request: int = 0
    max_output_tokens: int = DEFAULT_OUTPUT_CAP
    provider_cost: "ModelPrice | None" = None

    def __post_init__(self) -> None:
        for name in RATE_FIELDS:
            value = getattr(self, name)
            if value is None and name in ("cached_input", "reasoning"):
                continue
            if not within(value, MAX_RATE):
                raise InvalidPrice(
                    f"price {name} must be a whole number of nanocredits from 0 to {MAX_RATE} "
                    f"({format_credits(MAX_RATE)} credits)",
                    param=name,
                )
        if not within(self.max_output_tokens, MAX_TOKENS) or self.max_output_tokens == 0:
            raise InvalidPrice(
                f"max_output_tokens must be an integer from 1 to {MAX_TOKENS}", param="max_output_tokens"
            )
        if self.provider_cost is not None and not isinstance(self.provider_cost, ModelPrice):
            raise InvalidPrice("provider_cost must be a price", param="provider_cost")

    @property
    def cached_input_rate(self) -> int:
        return self.input if self.cached_input is None else self.cached_input

    @property
    def reasoning_rate(self) -> int:
        return self.output if self.reasoning is None else self.reasoning

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelPrice":
        cost = data.get("provider_cost")
        return cls(**{**data, "provider_cost": cls.from_dict(cost) if isinstance(cost, dict) else None})


def price_usage(price: ModelPrice, usage: Usage) -> Nanocredits:
    """The charge for ``usage`` at ``price``, rounded once (half up)."""
    return price_counts(
        price, usage.input_tokens, usage.cached_input_tokens, usage.output_tokens, usage.reasoning_tokens, usage.images
    )


def price_counts(
    price: ModelPrice,
    input_tokens: int,
    cached_input_tokens: int,
    output_tokens: int,
    reasoning_tokens: int,
    images: int,
) -> Nanocredits:
    """``price_usage`` of usage counts already validated (read back from the ledger by replay)."""
    scaled = (
        (input_tokens - cached_input_tokens) * price.input
        + cached_input_tokens * price.cached_input_rate
        + (output_tokens - reasoning_tokens) * price.output
        + reasoning_tokens * price.reasoning_rate
    )
    tokens_part = (scaled + TOKENS_PER_RATE_UNIT // 2) // TOKENS_PER_RATE_UNIT
    return Nanocredits(tokens_part + images * price.per_image + price.per_request)


def provider_cost_of(price: ModelPrice | None, usage: Usage) -> int | None:
    """What the provider charges for ``usage`` at the recorded cost rates; None if unknown."""
    if price is None or price.provider_cost is None:
        return None
    return price_usage(price.provider_cost, usage)


def worst_case_usage(
    prompt_bytes: int, max_output_tokens: int | None, choices: int, price: ModelPrice, images: int = 0
) -> Usage:
    """An upper bound on a request's usage, for the hold placed before the call.

    Input: no tokenizer emits more tokens than the UTF-8 bytes it reads, so the
    byte length of the prompt bounds its tokens. Output: the request's
    ``max_tokens`` (or the model's cap) for each of its ``n`` choices; images: as asked.
    """
    cap = max_output_tokens if max_output_tokens is not None else price.max_output_tokens
    output = cap * max(choices, 1)
    # Output may all be reasoning: bound it at whichever of the two rates is dearer.
    reasoning = output if price.reasoning_rate > price.output else 0
    return Usage(
        input_tokens=max(prompt_bytes, 0),
        output_tokens=output,
        reasoning_tokens=reasoning,
        images=images,
        source="estimated",
    )
