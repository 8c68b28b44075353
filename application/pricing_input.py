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
text (domain/money.py's grammar) or integers, never floats, each at most
``bounds.MAX_RATE`` (100,000 credits); ``max_output_tokens`` is an integer up to
``bounds.MAX_TOKENS``. ``input`` and ``output`` are required; unknown fields are
refused by name, so a typo never silently prices a model at zero. A refusal is an
``InvalidRequest`` whose ``param`` names the field (``models.<model>.<field>`` in a
file); a file that is not JSON, nests deeper than the JSON reader goes, or holds an
integer longer than ``MAX_INTEGER_DIGITS`` digits is refused the same way, never with
a crash.
"""

import json
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from domain.bounds import MAX_RATE
from domain.errors import InvalidRequest
from domain.money import parse_credits
from domain.pricing import DEFAULT_OUTPUT_CAP, RATE_FIELDS, ModelPrice

Credits = str | int | Decimal
MAX_INTEGER_DIGITS = 30


def price_from_credits(
    *,
    input: Credits,
    output: Credits,
    cached_input: Credits | None = None,
    reasoning: Credits | None = None,
    per_image: Credits | None = None,
    per_request: Credits | None = None,
    max_output_tokens: int | None = None,
    where: str = "",
) -> ModelPrice:
    """One model's price from credits per 1M tokens; ``where`` prefixes each field's name in
    a refusal's ``param`` (``"models.openai/o3."`` for a file)."""

    def rate(name: str, value: Credits | None, default: int | None) -> int | None:
        if value is None:
            return default
        return parse_credits(value, maximum=MAX_RATE, param=where + name)

    try:
        return ModelPrice(
            input=rate("input", input, None),  # type: ignore[arg-type]
            output=rate("output", output, None),  # type: ignore[arg-type]
            cached_input=rate("cached_input", cached_input, None),
            reasoning=rate("reasoning", reasoning, None),
            per_image=rate("per_image", per_image, 0),  # type: ignore[arg-type]
            per_request=rate("per_request", per_request, 0),  # type: ignore[arg-type]
            max_output_tokens=max_output_tokens or DEFAULT_OUTPUT_CAP,
        )
    except InvalidRequest as exc:  # answered invalid_request (not invalid_amount), as prices always were
        param = where + exc.param if exc.param and not exc.param.startswith(where) else exc.param
        raise InvalidRequest(f"invalid price: {exc}", param=param) from None


MODEL_FIELDS = {*RATE_FIELDS, "max_output_tokens", "provider_cost"}


def parse_price_file(text: str) -> tuple[dict[str, ModelPrice], datetime | None]:
    """A price file's models and effective time; InvalidRequest names the first problem."""
    try:
        document = json.loads(text, parse_float=_refuse_float, parse_int=_bounded_int)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"the price file is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest("the price file nests too deeply to be a price file") from None
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
    where = f"models.{model}."
    try:
        price = price_from_credits(
            **{name: entry[name] for name in RATE_FIELDS if name in entry},
            max_output_tokens=entry.get("max_output_tokens"),
            where=where,
        )
        cost = entry.get("provider_cost")
        if cost is not None:
            if not isinstance(cost, dict) or set(cost) - set(RATE_FIELDS) or not {"input", "output"} <= set(cost):
                raise InvalidRequest(
                    "provider_cost needs input and output rates and nothing but rates", param=where + "provider_cost"
                )
            price = replace(price, provider_cost=price_from_credits(**cost, where=where + "provider_cost."))
    except InvalidRequest as exc:
        raise InvalidRequest(f"{model}: {exc}", param=exc.param) from None
    return price


def _effective_at(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"effective_at is not an ISO 8601 time: {value!r}") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise InvalidRequest(
            f"the price file holds an integer of {len(text)} digits; no rate or cap needs more "
            f"than {MAX_INTEGER_DIGITS}"
        )
    return int(text)


def _refuse_float(text: str) -> Any:
    raise InvalidRequest(f'rates are decimal text or integers, not JSON floats ({text}); write "{text}"')
