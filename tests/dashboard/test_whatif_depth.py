"""The what-if and the deeper rates: a scale reaches every rate (cache writes, the web-search
fee, each tier's rates); a model priced per request by context or service tier is left out
of the rollup what-if and named, never priced from hourly sums at one tier."""

import pandas as pd

from dashboard import whatif
from domain.pricing import ContextTier, ModelPrice, ServiceTierPrice
from projections.usage import COUNTERS

C = 10**9


def usage_frame(*rows: dict[str, object]) -> pd.DataFrame:
    base = {name: 0 for name in COUNTERS}
    return pd.DataFrame([{"account_id": "a" * 32, "model": "openai/m", **base, **row} for row in rows])


def test_a_scaled_what_if_scales_the_deeper_rates_too() -> None:
    price = ModelPrice(
        input=C,
        output=C,
        cache_write_5m=3,
        per_web_search=5,
        context_tiers=(ContextTier(100, input=2 * C, output=3, cache_write_1h=7),),
        service_tiers=(("flex", ServiceTierPrice(input=1, output=1, context_tiers=(ContextTier(5, 9, 9),))),),
    )
    book = {"openai/m": price.to_dict()}
    doubled = whatif.parse_edited(whatif.editable_rows(book), book, scale="2")["openai/m"]
    assert (doubled.cache_write_5m, doubled.cache_write_1h, doubled.per_web_search) == (6, None, 10)
    assert doubled.context_tiers == (ContextTier(100, input=4 * C, output=6, cache_write_1h=14),)
    assert doubled.service_tiers == (
        ("flex", ServiceTierPrice(input=2, output=2, context_tiers=(ContextTier(5, 18, 18),))),
    )
    assert whatif.parse_edited(whatif.editable_rows(book), book)["openai/m"] == price


def test_a_tiered_model_is_left_out_of_the_rollup_what_if_and_named() -> None:
    flat = ModelPrice(input=C, output=C)
    tiered = ModelPrice(input=C, output=C, context_tiers=(ContextTier(200_000, input=2 * C, output=2 * C),))
    by_tier = ModelPrice(input=C, output=C, service_tiers=(("flex", ServiceTierPrice(input=1, output=1)),))
    usage = usage_frame(
        {"requests": 1, "input_tokens": 1000, "cost": 1_000_000},
        {"model": "google/g", "requests": 2, "input_tokens": 300_000, "cost": 1},
        {"model": "openai/flex", "requests": 1, "input_tokens": 1000, "cost": 1},
    )
    prices = {"openai/m": flat, "google/g": tiered, "openai/flex": by_tier}
    repriced = whatif.reprice(usage, prices)
    assert whatif.summarise(repriced, ["model"])["model"].tolist() == ["openai/m"]
    assert whatif.tiered_models(repriced, prices) == ["google/g", "openai/flex"]
    assert whatif.unpriced_models(repriced, prices) == []
