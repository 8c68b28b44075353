"""Turning operator input (decimal credits per 1M tokens) into prices, exactly: one
model's rates from ``prices set`` or the admin API, or a whole price file.

A price file is JSON::

    {"effective_at": "2026-12-01T00:00:00Z",          # optional: default now; never in the past
     "models": {
       "openai/gpt-4o-mini": {
         "input": "0.15", "cached_input": "0.075", "output": "0.60", "reasoning": "0.60",
         "per_image": "0", "per_request": "0", "max_output_tokens": 16384, "context_window": 128000,
         "service_tiers": {"flex": {"input": "0.075", "output": "0.30"}},
         "provider_cost": {"input": "0.10", "cached_input": "0.05", "output": "0.40"}},
       "anthropic/claude-sonnet-4": {
         "input": "3", "cached_input": "0.30", "output": "15",
         "cache_write": "3.75", "cache_write_1h": "6", "per_web_search": "0.01"},
       "google/gemini-2.5-pro": {
         "input": "1.25", "cached_input": "0.3125", "output": "10",
         "context_tiers": [{"above_input_tokens": 200000, "input": "2.5", "cached_input": "0.625",
                            "output": "15"}]}}}

Rates are credits per 1M tokens (per image / web search call / request for the
``per_*`` fees), as decimal text (domain/money.py's grammar) or integers, never
floats, each at most ``bounds.MAX_RATE`` (100,000 credits); ``max_output_tokens`` and
a tier's ``above_input_tokens`` are integers up to ``bounds.MAX_TOKENS``;
``context_window`` (optional, informational: the model list shows it) is an integer from 1
to ``bounds.MAX_TOKENS``.
``cache_write`` is the 5-minute cache-write rate (``cache_write_5m`` is the same
field; give one of them); unset, the 5-minute rate is 1.25 × and the 1-hour rate
2 × the input rate. ``context_tiers`` is a list of tiers (``above_input_tokens``,
``input``, ``output`` required; ``cached_input``, ``reasoning``, the cache-write rates
optional); ``service_tiers`` maps a tier name a response may report to its rates (the
tier's fields, plus its own ``context_tiers``). ``provider_cost`` takes every rate
field and tier too. ``input`` and ``output`` are required at every level; unknown
fields are refused by name, so a typo never silently prices a model at zero. A
refusal is an ``InvalidRequest`` whose ``param`` names the field
(``models.<model>.<field>`` in a file, ``context_tiers.0.input`` within a tier); a
file that is not JSON, nests deeper than the JSON reader goes, or holds an integer
longer than ``MAX_INTEGER_DIGITS`` digits is refused the same way, never with a crash.
"""

import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from domain.bounds import MAX_RATE, MAX_TOKENS, within
from domain.errors import InvalidRequest
from domain.money import parse_credits
from domain.pricing import DEFAULT_OUTPUT_CAP, ContextTier, ModelPrice, ServiceTierPrice

Credits = str | int | Decimal
MAX_INTEGER_DIGITS = 30

TOKEN_RATES = ("input", "output", "cached_input", "reasoning", "cache_write", "cache_write_5m", "cache_write_1h")
FEES = ("per_image", "per_request", "per_web_search")
ENTRY_RATES = (*TOKEN_RATES, *FEES)
MODEL_FIELDS = {*ENTRY_RATES, "max_output_tokens", "provider_cost", "context_tiers", "service_tiers", "context_window"}
COST_FIELDS = {*ENTRY_RATES, "context_tiers", "service_tiers"}
TIER_FIELDS = {"above_input_tokens", *TOKEN_RATES}
SERVICE_TIER_FIELDS = {*TOKEN_RATES, "context_tiers"}


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
    cache_write: Credits | None = None,
    cache_write_5m: Credits | None = None,
    cache_write_1h: Credits | None = None,
    per_web_search: Credits | None = None,
    context_tiers: list[Mapping[str, Any]] | None = None,
    service_tiers: Mapping[str, Mapping[str, Any]] | None = None,
    context_window: int | None = None,
) -> ModelPrice:
    """One model's price from credits per 1M tokens; ``where`` prefixes each field's name in
    a refusal's ``param`` (``"models.openai/o3."`` for a file)."""
    given = {
        "input": input,
        "output": output,
        "cached_input": cached_input,
        "reasoning": reasoning,
        "per_image": per_image,
        "per_request": per_request,
        "max_output_tokens": max_output_tokens,
        "cache_write": cache_write,
        "cache_write_5m": cache_write_5m,
        "cache_write_1h": cache_write_1h,
        "per_web_search": per_web_search,
        "context_tiers": context_tiers,
        "service_tiers": service_tiers,
        "context_window": context_window,
    }
    return price_from_entry({name: value for name, value in given.items() if value is not None}, where=where)


def price_from_entry(entry: Mapping[str, Any], *, where: str = "", cost: bool = False) -> ModelPrice:
    """A price from one price-file entry (``cost``: a ``provider_cost`` object, which has no
    output cap and no cost of its own); InvalidRequest names the first bad field."""
    _check_fields(entry, COST_FIELDS if cost else MODEL_FIELDS, where)
    try:
        cap = entry.get("max_output_tokens")
        price = ModelPrice(
            **_token_rates(entry, where),
            per_image=_rate(entry, "per_image", where) or 0,
            per_request=_rate(entry, "per_request", where) or 0,
            per_web_search=_rate(entry, "per_web_search", where) or 0,
            max_output_tokens=DEFAULT_OUTPUT_CAP if cap is None else cap,
            context_tiers=_context_tiers(entry.get("context_tiers"), where),
            service_tiers=_service_tiers(entry.get("service_tiers"), where),
            context_window=entry.get("context_window"),
        )
        provider_cost = entry.get("provider_cost")
        if provider_cost is not None:
            if not isinstance(provider_cost, Mapping):
                raise InvalidRequest("provider_cost must be an object of rates", param=where + "provider_cost")
            price = replace(
                price, provider_cost=price_from_entry(provider_cost, where=where + "provider_cost.", cost=True)
            )
    except InvalidRequest as exc:  # answered invalid_request (not invalid_amount), as prices always were
        param = where + exc.param if exc.param and not exc.param.startswith(where) else exc.param
        message = str(exc) if str(exc).startswith("invalid price") else f"invalid price: {exc}"
        raise InvalidRequest(message, param=param) from None
    return price


def _check_fields(entry: Any, allowed: set[str], where: str) -> None:
    if not isinstance(entry, Mapping):
        raise InvalidRequest(
            f"{where.rstrip('.') or 'a price'}: expected an object of rates", param=where.rstrip(".") or None
        )
    unknown = set(entry) - allowed
    if unknown:
        first = sorted(unknown)[0]
        names = ", ".join(where + name for name in sorted(unknown))
        raise InvalidRequest(f"unknown field(s) {names}", param=where + first)
    for required in ("input", "output"):
        if required not in entry:
            inside = f" (in {where.rstrip('.')})" if where else ""
            raise InvalidRequest(f"{required!r} is required{inside}", param=where + required)


def _rate(entry: Mapping[str, Any], name: str, where: str) -> int | None:
    value = entry.get(name)
    if value is None:
        return None
    return parse_credits(value, maximum=MAX_RATE, param=where + name)


def _token_rates(entry: Mapping[str, Any], where: str) -> dict[str, Any]:
    if entry.get("cache_write") is not None and entry.get("cache_write_5m") is not None:
        raise InvalidRequest(
            "cache_write is the 5-minute cache-write rate: give it or cache_write_5m, not both",
            param=where + "cache_write",
        )
    write_5m = _rate(entry, "cache_write", where)
    return {
        "input": _rate(entry, "input", where),
        "output": _rate(entry, "output", where),
        "cached_input": _rate(entry, "cached_input", where),
        "reasoning": _rate(entry, "reasoning", where),
        "cache_write_5m": write_5m if write_5m is not None else _rate(entry, "cache_write_5m", where),
        "cache_write_1h": _rate(entry, "cache_write_1h", where),
    }


def _context_tiers(tiers: Any, where: str) -> tuple[ContextTier, ...]:
    if tiers is None:
        return ()
    if not isinstance(tiers, list):
        raise InvalidRequest("context_tiers must be a list of tiers", param=where + "context_tiers")
    parsed = []
    for index, tier in enumerate(tiers):
        at = f"{where}context_tiers.{index}."
        _check_fields(tier, TIER_FIELDS, at)
        threshold = tier.get("above_input_tokens")
        if not within(threshold, MAX_TOKENS):
            raise InvalidRequest(
                f"above_input_tokens is required: an integer from 0 to {MAX_TOKENS}", param=at + "above_input_tokens"
            )
        parsed.append(ContextTier(above_input_tokens=threshold, **_token_rates(tier, at)))
    try:
        return ModelPrice(input=0, output=0, context_tiers=tuple(parsed)).context_tiers
    except InvalidRequest as exc:
        raise InvalidRequest(str(exc), param=where + "context_tiers") from None


def _service_tiers(tiers: Any, where: str) -> tuple[tuple[str, ServiceTierPrice], ...]:
    if tiers is None:
        return ()
    if not isinstance(tiers, Mapping):
        raise InvalidRequest("service_tiers must be an object of tier name -> rates", param=where + "service_tiers")
    parsed = []
    for name, tier in tiers.items():
        at = f"{where}service_tiers.{name}."
        _check_fields(tier, SERVICE_TIER_FIELDS, at)
        rates = _token_rates(tier, at)
        parsed.append((name, ServiceTierPrice(**rates, context_tiers=_context_tiers(tier.get("context_tiers"), at))))
    return tuple(parsed)


def parse_tier_flag(text: str, flag: str, *, threshold: bool) -> tuple[str, dict[str, Any]]:
    """``prices set``'s tier flags: ``200000:input=2.5,output=15`` (``--context-tier``, whose
    head is ``above_input_tokens``) or ``flex:input=1,output=4`` (``--service-tier``, whose
    head is the tier's name), as the head and a price-file tier object."""
    head, sep, body = text.partition(":")
    if not sep or not head or not body:
        raise InvalidRequest(f"{flag} takes HEAD:input=RATE,output=RATE[,name=RATE...], got {text!r}", param=flag)
    rates: dict[str, Any] = {}
    for item in body.split(","):
        name, eq, value = item.strip().partition("=")
        if not eq or not name or name in rates:
            raise InvalidRequest(f"{flag}: {item!r} is not one name=RATE (each name once)", param=flag)
        rates[name] = value
    if threshold:
        if not head.isdigit() or len(head) > MAX_INTEGER_DIGITS:
            raise InvalidRequest(f"{flag}: {head!r} is not a number of input tokens", param=flag)
        rates = {"above_input_tokens": int(head), **rates}
    return head, rates


def parse_price_file(text: str) -> tuple[dict[str, ModelPrice], datetime | None]:
    """A price file's models and effective time; InvalidRequest names the first problem."""
    document = parse_json(text, "the price file")
    if not isinstance(document, dict) or not isinstance(document.get("models"), dict) or not document["models"]:
        raise InvalidRequest('a price file is an object with a non-empty "models" object')
    unknown = set(document) - {"effective_at", "models"}
    if unknown:
        raise InvalidRequest(f"unknown field(s) in the price file: {', '.join(sorted(unknown))}")
    prices = {model: _model_price(model, entry) for model, entry in document["models"].items()}
    return prices, _effective_at(document.get("effective_at"))


def parse_json(text: str, what: str) -> Any:
    """JSON as a price file reads it: no floats, no integer longer than ``MAX_INTEGER_DIGITS``."""
    try:
        return json.loads(text, parse_float=_refuse_float, parse_int=_bounded_int)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest(f"{what} nests too deeply to be a price") from None


def _model_price(model: str, entry: Any) -> ModelPrice:
    if not isinstance(entry, dict):
        raise InvalidRequest(f"{model}: expected an object of rates")
    try:
        return price_from_entry(entry, where=f"models.{model}.")
    except InvalidRequest as exc:
        raise InvalidRequest(f"{model}: {exc}", param=exc.param) from None


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
