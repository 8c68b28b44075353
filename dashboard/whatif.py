"""A read-only what-if: the usage rollups re-priced under an edited copy of a price book.

Invariants kept here:
- pure integer arithmetic with ``domain.pricing.price_usage``, the one rounding rule;
  nothing is written anywhere;
- a bucket's per-request fee is counted once per *completed* request (failed requests
  are never charged), its token part is rounded once per bucket — so on rates that are
  not whole nanocredits per token the what-if can differ from an exact per-request replay
  (``tallyhub replay``) by less than one nanocredit per request;
- a model the edited book does not price is reported as unpriced, never as zero;
- a model whose edited price has context tiers or service tiers is left out and named
  (``tiered_models``): the hourly rollups sum many requests, and a tier is chosen per
  request (by its prompt size, by the tier its response reported), so only ``tallyhub
  replay``, which prices each recorded request, can price it exactly;
- every rate scales with the what-if's factor, the deeper ones too (cache writes, the
  web-search fee, each tier's rates). Counts a rollup does not carry (cache writes, web
  searches) are priced as the rollup has them: cache writes within input tokens.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import pandas as pd

from domain.bounds import MAX_RATE
from domain.money import InvalidAmount, format_credits, parse_credits
from domain.pricing import InvalidPrice, ModelPrice, price_usage
from domain.usage import Usage

EDITABLE = ("input", "cached_input", "output", "per_image", "per_request")
UNEDITED_RATES = ("reasoning", "cache_write_5m", "cache_write_1h", "per_web_search")
TIER_RATES = ("input", "output", "cached_input", "reasoning", "cache_write_5m", "cache_write_1h")


class PriceEditError(ValueError):
    """An edited rate that is not exact decimal credits."""


def bucket_price(price: ModelPrice, counts: dict[str, Any]) -> int:
    usage = Usage(
        input_tokens=int(counts["input_tokens"]),
        cached_input_tokens=int(counts["cached_input_tokens"]),
        output_tokens=int(counts["output_tokens"]),
        reasoning_tokens=int(counts["reasoning_tokens"]),
        images=int(counts["images"]),
        cache_write_5m_tokens=int(counts.get("cache_write_5m_tokens", 0)),  # when a rollup carries them
        cache_write_1h_tokens=int(counts.get("cache_write_1h_tokens", 0)),
        web_search_calls=int(counts.get("web_search_calls", 0)),
    )
    completed = int(counts["requests"]) - int(counts["failed_requests"])
    return int(price_usage(replace(price, per_request=0), usage)) + completed * price.per_request


def reprice(usage: pd.DataFrame, prices: dict[str, ModelPrice]) -> pd.DataFrame:
    """One row per usage bucket: recorded ``cost``/``charge`` and the what-if ``new_cost`` (None: unpriced)."""
    new_costs = [
        bucket_price(prices[row["model"]], row)
        if row["model"] in prices and not _tiered(prices[row["model"]])
        else None
        for row in usage.to_dict("records")
    ]
    return usage.assign(new_cost=pd.array(new_costs, dtype="Int64"))


def _tiered(price: ModelPrice) -> bool:
    return bool(price.context_tiers or price.service_tiers)


def tiered_models(repriced: pd.DataFrame, prices: dict[str, ModelPrice]) -> list[str]:
    """Models left out because their price picks rates per request (``tallyhub replay`` prices them)."""
    return sorted(model for model in set(repriced["model"]) if model in prices and _tiered(prices[model]))


def summarise(repriced: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Recorded list cost, what-if cost and their difference per group (priced groups only)."""
    priced = repriced[repriced["new_cost"].notna()]
    frame = priced.groupby(by)[["requests", "cost", "new_cost"]].sum().reset_index()
    frame["new_cost"] = frame["new_cost"].astype("int64")
    frame["difference"] = frame["new_cost"] - frame["cost"]
    return frame


def unpriced_models(repriced: pd.DataFrame, prices: dict[str, ModelPrice] | None = None) -> list[str]:
    """Models the edited book does not price (``prices``: the book, so tiered models are not listed)."""
    missing = set(repriced.loc[repriced["new_cost"].isna(), "model"])
    return sorted(model for model in missing if prices is None or model not in prices)


def editable_rows(prices: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """A price book as text cells of credits per 1M tokens (per image / request), for editing."""
    rows = []
    for model, data in sorted(prices.items()):
        row: dict[str, str] = {"model": model}
        for name in EDITABLE:
            value = data.get(name)
            row[name] = "" if value is None else format_credits(int(value))
        rows.append(row)
    return pd.DataFrame(rows, columns=["model", *EDITABLE])


def parse_edited(rows: pd.DataFrame, base: dict[str, dict[str, Any]], scale: str = "1") -> dict[str, ModelPrice]:
    """The edited book: every rate parsed exactly, then multiplied by ``scale`` (rounded half up
    to a whole nanocredit per 1M tokens). Raises PriceEditError naming the bad cell."""
    factor = _factor(scale)
    prices: dict[str, ModelPrice] = {}
    for row in rows.to_dict("records"):
        model = str(row["model"])
        data = {k: v for k, v in base.get(model, {}).items() if k != "provider_cost"}
        for name in EDITABLE:
            text = "" if row.get(name) is None else str(row[name]).strip()
            if text == "":
                if name in ("input", "output"):
                    raise PriceEditError(f"{model}: {name} is required")
                data[name] = None if name == "cached_input" else 0
                continue
            try:
                data[name] = _scaled(parse_credits(text), factor)
            except InvalidAmount as error:
                raise PriceEditError(f"{model}: {name}: {error}") from None
        for name in UNEDITED_RATES:  # rates a newer price book has that this table does not edit
            if data.get(name) is not None:
                data[name] = _scaled(int(data[name]), factor)
        if data.get("context_tiers"):
            data["context_tiers"] = [_scaled_tier(tier, factor) for tier in data["context_tiers"]]
        if data.get("service_tiers"):
            data["service_tiers"] = {name: _scaled_tier(t, factor) for name, t in data["service_tiers"].items()}
        try:
            prices[model] = ModelPrice.from_dict(data)
        except InvalidPrice as error:  # a scaled rate past the bound (domain/bounds.py)
            raise PriceEditError(f"{model}: {error}") from None
    return prices


def _factor(scale: str) -> Decimal:
    try:
        factor = Decimal(str(scale).strip())
    except InvalidOperation:
        raise PriceEditError(f"the scale must be a decimal number, not {scale!r}") from None
    if not factor.is_finite() or factor < 0:
        raise PriceEditError("the scale must be a finite, non-negative decimal number")
    if factor > MAX_RATE:  # any rate but zero would be scaled past the bound: refused before the arithmetic
        raise PriceEditError(f"the scale must be at most {MAX_RATE}")
    return factor


def _scaled_tier(tier: dict[str, Any], factor: Decimal) -> dict[str, Any]:
    scaled: dict[str, Any] = {}
    for name, value in tier.items():
        if name == "context_tiers":
            scaled[name] = [_scaled_tier(inner, factor) for inner in value]
        else:
            scaled[name] = _scaled(int(value), factor) if name in TIER_RATES and value is not None else value
    return scaled


def _scaled(rate: int, factor: Decimal) -> int:
    return int((Decimal(rate) * factor).to_integral_value(rounding=ROUND_HALF_UP))
