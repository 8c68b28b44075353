"""Pricing is pure arithmetic on integers.

The one rounding rule: a charge is computed exactly as a sum of
``tokens × rate`` terms (rates are nanocredits per 1,000,000 tokens), divided by
1,000,000 once and rounded half up to a whole nanocredit; per-image and
per-request fees are whole nanocredits and are added after that single rounding.
Nothing else in Tallyhub rounds money.
"""

from dataclasses import asdict, dataclass
from typing import Any

from domain.money import Nanocredits
from domain.usage import Usage

TOKENS_PER_RATE_UNIT = 1_000_000
DEFAULT_OUTPUT_CAP = 4096


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """Sell rates for one model, in nanocredits per 1M tokens (or per image / request).

    ``cached_input`` defaults to the input rate; ``max_output_tokens`` is the output cap
    used for the worst-case hold when a request does not set ``max_tokens``.
    """

    input: int
    output: int
    cached_input: int | None = None
    per_image: int = 0
    per_request: int = 0
    max_output_tokens: int = DEFAULT_OUTPUT_CAP

    def __post_init__(self) -> None:
        for name in ("input", "output", "cached_input", "per_image", "per_request"):
            value = getattr(self, name)
            if value is None and name == "cached_input":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"price {name} must be a non-negative integer of nanocredits")
        if not isinstance(self.max_output_tokens, int) or self.max_output_tokens <= 0:
            raise ValueError("max_output_tokens must be a positive integer")

    @property
    def cached_input_rate(self) -> int:
        return self.input if self.cached_input is None else self.cached_input

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelPrice":
        return cls(**data)


def price_usage(price: ModelPrice, usage: Usage) -> Nanocredits:
    """The charge for ``usage`` at ``price``, rounded once (half up)."""
    uncached_input = usage.input_tokens - usage.cached_input_tokens
    scaled = (
        uncached_input * price.input
        + usage.cached_input_tokens * price.cached_input_rate
        + usage.output_tokens * price.output
    )
    tokens_part = (scaled + TOKENS_PER_RATE_UNIT // 2) // TOKENS_PER_RATE_UNIT
    return Nanocredits(tokens_part + usage.images * price.per_image + price.per_request)


def worst_case_usage(prompt_bytes: int, max_output_tokens: int | None, choices: int, price: ModelPrice,
                     images: int = 0) -> Usage:
    """An upper bound on a request's usage, for the hold placed before the call.

    Input: no tokenizer emits more tokens than the UTF-8 bytes it reads, so the
    byte length of the prompt bounds its tokens. Output: the request's
    ``max_tokens`` (or the model's cap) for each of its ``n`` choices; images: as asked.
    """
    cap = max_output_tokens if max_output_tokens is not None else price.max_output_tokens
    return Usage(input_tokens=max(prompt_bytes, 0), output_tokens=cap * max(choices, 1), images=images,
                 source="estimated")
