"""Turning operator input (decimal credits per 1M tokens) into a ModelPrice, exactly."""

from decimal import Decimal

from domain.errors import InvalidRequest
from domain.money import InvalidAmount, parse_credits
from domain.pricing import DEFAULT_OUTPUT_CAP, ModelPrice

Credits = str | int | Decimal


def price_from_credits(*, input: Credits, output: Credits, cached_input: Credits | None = None,
                       per_image: Credits | None = None, per_request: Credits | None = None,
                       max_output_tokens: int | None = None) -> ModelPrice:
    try:
        return ModelPrice(
            input=parse_credits(input),
            output=parse_credits(output),
            cached_input=None if cached_input is None else parse_credits(cached_input),
            per_image=0 if per_image is None else parse_credits(per_image),
            per_request=0 if per_request is None else parse_credits(per_request),
            max_output_tokens=max_output_tokens or DEFAULT_OUTPUT_CAP,
        )
    except (InvalidAmount, ValueError) as exc:
        raise InvalidRequest(f"invalid price: {exc}") from None
