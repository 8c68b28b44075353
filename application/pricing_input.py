"""Turning operator input (decimal credits per 1M tokens) into prices, exactly: one
model's rates from ``prices set``, or a whole price file.

A price file is JSON::

    {"effective_at": "2026-12-01T00:00:00Z",          # optional: default now; never in the past
     "models": {
       "openai/gpt-4o-mini": {
         "input": "0.15", "cached_input": "0.075", "output": "0.60", "reasoning": "0.60",
         "per_image": "0", "per_request": "0", "max_output_tokens": 16384,
         "provider_cost": {"input": "0.10", "cached_input": "0.05", "output": "0.40"}}}}

Rates are credits per 1M tokens (per image / per request for those two), as decimal
text or integers, never floats. ``input`` and ``output`` are required; unknown fields
are refused by name, so a typo never silently prices a model at zero.
"""

import json
from dataclasses import replace
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from domain.errors import InvalidRequest
from domain.money import InvalidAmount, parse_credits
from domain.pricing import DEFAULT_OUTPUT_CAP, ModelPrice

Credits = str | int | Decimal


def price_from_credits(*, input: Credits, output: Credits, cached_input: Credits | None = None,
                       reasoning: Credits | None = None, per_image: Credits | None = None,
                       per_request: Credits | None = None, max_output_tokens: int | None = None) -> ModelPrice:
    try:
        return ModelPrice(
            input=parse_credits(input),
            output=parse_credits(output),
            cached_input=None if cached_input is None else parse_credits(cached_input),
            reasoning=None if reasoning is None else parse_credits(reasoning),
            per_image=0 if per_image is None else parse_credits(per_image),
            per_request=0 if per_request is None else parse_credits(per_request),
            max_output_tokens=max_output_tokens or DEFAULT_OUTPUT_CAP,
        )
    except (InvalidAmount, ValueError) as exc:
        raise InvalidRequest(f"invalid price: {exc}") from None


RATE_FIELDS = ("input", "output", "cached_input", "reasoning", "per_image", "per_request")
MODEL_FIELDS = {*RATE_FIELDS, "max_output_tokens", "provider_cost"}


def parse_price_file(text: str) -> tuple[dict[str, ModelPrice], datetime | None]:
    """A price file's models and effective time; InvalidRequest names the first problem."""
    try:
        document = json.loads(text, parse_float=_refuse_float)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"the price file is not valid JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("models"), dict) or not document["models"]:
        raise InvalidRequest('a price file is an object with a non-empty "models" object')
    unknown = set(document) - {"effective_at", "models"}
    if unknown:
        raise InvalidRequest(f"unknown field(s) in the price file: {', '.join(sorted(unknown))}")
    prices = {model: _model_price(model, entry) for model, entry in document["models"].items()}
    return prices, _effective_at(document.get("effective_at"))


def _model_price(model: str, entry: Any) -> ModelPrice:
    if not isinstance(entry, dict):
        raise InvalidRequest(f"{model}: expected an object of rates")
    unknown = set(entry) - MODEL_FIELDS
    if unknown:
        raise InvalidRequest(f"{model}: unknown field(s) {', '.join(sorted(unknown))}")
    for required in ("input", "output"):
        if required not in entry:
            raise InvalidRequest(f"{model}: {required!r} is required")
    try:
        price = price_from_credits(**{name: entry[name] for name in RATE_FIELDS if name in entry},
                                   max_output_tokens=entry.get("max_output_tokens"))
        cost = entry.get("provider_cost")
        if cost is not None:
            if not isinstance(cost, dict) or set(cost) - set(RATE_FIELDS) or not {"input", "output"} <= set(cost):
                raise InvalidRequest("provider_cost needs input and output rates and nothing but rates")
            price = replace(price, provider_cost=price_from_credits(**cost))
    except InvalidRequest as exc:
        raise InvalidRequest(f"{model}: {exc}") from None
    return price


def _effective_at(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"effective_at is not an ISO 8601 time: {value!r}") from None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def _refuse_float(text: str) -> Any:
    raise InvalidRequest(f"rates are decimal text or integers, not JSON floats ({text}); write \"{text}\"")
