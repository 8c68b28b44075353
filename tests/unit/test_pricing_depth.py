"""Golden tests of the price book's deeper rates (issue 16): a normalised Usage → the
exact charge in nanocredits, for each rate kind, each tier boundary and each default;
hypothesis: a charge is never negative, never falls when a count grows, and the
worst-case hold bounds every usage a request could be charged for."""

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.bounds import MAX_WEB_SEARCH_CALLS
from domain.pricing import (
    ContextTier,
    InvalidPrice,
    ModelPrice,
    ServiceTierPrice,
    price_counts,
    price_usage,
    provider_cost_of,
    worst_case_usage,
)
from domain.usage import Usage
from domain.usage_bounds import clamp_usage, from_reported, reported, usage_bound

C = 10**9  # nanocredits per credit: a rate of "2.5" credits per 1M tokens is 2.5 * C

GPT = ModelPrice(input=2_500_000_000, cached_input=1_250_000_000, output=10 * C)
SONNET = ModelPrice(input=3 * C, output=15 * C, cached_input=300_000_000)  # cache writes at their defaults
GEMINI_PRO = ModelPrice(
    input=1_250_000_000,
    cached_input=312_500_000,
    output=10 * C,
    context_tiers=(
        ContextTier(above_input_tokens=200_000, input=2_500_000_000, output=15 * C, cached_input=625_000_000),
    ),
)


def test_openai_cached_and_reasoning_tokens_are_each_priced_once() -> None:
    usage = Usage(input_tokens=1000, cached_input_tokens=800, output_tokens=200, reasoning_tokens=150)
    # 200 plain input x 2.5 + 800 cached x 1.25 + 200 output x 10 (reasoning is part of output)
    assert price_usage(GPT, usage) == (200 * 2_500_000_000 + 800 * 1_250_000_000 + 200 * 10 * C) // 10**6
    assert price_usage(GPT, usage) == 3_500_000


def test_an_anthropic_5_minute_cache_write_is_priced_at_1_25_times_input_and_not_again_as_input() -> None:
    usage = Usage(input_tokens=6 + 159_217, cache_write_5m_tokens=159_217, output_tokens=2745)
    # 6 x 3 + 159,217 x 3.75 + 2,745 x 15 credits per 1M = 0.638256750 credits
    assert price_usage(SONNET, usage) == 638_256_750


def test_1_hour_and_5_minute_writes_are_each_priced_at_their_own_rate() -> None:
    usage = Usage(input_tokens=1_000_000, cache_write_1h_tokens=600_000, cache_write_5m_tokens=400_000)
    # 600k x 6 (2 x input) + 400k x 3.75 (1.25 x input) credits per 1M = 5.1 credits
    assert price_usage(SONNET, usage) == 5_100_000_000
    explicit = replace(SONNET, cache_write_5m=4 * C, cache_write_1h=7 * C)
    assert price_usage(explicit, usage) == 600_000 * 7 * C // 10**6 + 400_000 * 4 * C // 10**6


def test_the_cache_write_defaults_enter_the_sum_exactly_and_are_rounded_once() -> None:
    one = ModelPrice(input=1, output=0)  # 1 nanocredit per 1M tokens
    # 2M tokens x 1.25 nanocredits per 1M = 2.5, rounded half up once: 3 (a rounded rate would give 2)
    assert price_usage(one, Usage(input_tokens=2_000_000, cache_write_5m_tokens=2_000_000)) == 3
    # 1.2M x 1.25 = 1.5 -> 2; plus 1.2M x 2 (1 hour) = 2.4: one rounding of 3.9 -> 4, not 2 + 2
    usage = Usage(input_tokens=2_400_000, cache_write_5m_tokens=1_200_000, cache_write_1h_tokens=1_200_000)
    assert price_usage(one, usage) == 4
    assert price_usage(ModelPrice(input=3, output=0), Usage(input_tokens=10**6, cache_write_1h_tokens=10**6)) == 6


def test_a_prompt_above_the_threshold_prices_every_class_at_the_tier_and_thoughts_as_output() -> None:
    usage = Usage(input_tokens=250_000, cached_input_tokens=100_000, output_tokens=500 + 8000, reasoning_tokens=8000)
    # 150k x 2.5 + 100k x 0.625 + 8,500 x 15 credits per 1M = 0.565 credits
    assert price_usage(GEMINI_PRO, usage) == 565_000_000


def test_exactly_at_the_threshold_stays_in_the_lower_tier_and_one_more_token_moves_up() -> None:
    at = Usage(input_tokens=200_000, output_tokens=1000)
    above = Usage(input_tokens=200_001, output_tokens=1000)
    assert price_usage(GEMINI_PRO, at) == (200_000 * 1_250_000_000 + 1000 * 10 * C) // 10**6 == 260_000_000
    assert price_usage(GEMINI_PRO, above) == (200_001 * 2_500_000_000 + 1000 * 15 * C + 500_000) // 10**6
    assert price_usage(GEMINI_PRO, above) == 515_002_500


def test_cached_and_cache_write_tokens_count_toward_the_threshold() -> None:
    cached = Usage(input_tokens=200_001, cached_input_tokens=200_000)
    assert price_usage(GEMINI_PRO, cached) == (200_000 * 625_000_000 + 2_500_000_000) // 10**6
    written = Usage(input_tokens=200_001, cache_write_5m_tokens=200_001)
    assert price_usage(GEMINI_PRO, written) == (200_001 * 2_500_000_000 * 5 // 4 + 500_000) // 10**6


def test_the_highest_tier_passed_prices_the_request() -> None:
    tiers = (
        ContextTier(above_input_tokens=1000, input=2 * C, output=0),
        ContextTier(above_input_tokens=100, input=C, output=0),
    )
    price = ModelPrice(input=0, output=0, context_tiers=tiers)
    assert [tier.above_input_tokens for tier in price.context_tiers] == [100, 1000]
    assert price_usage(price, Usage(input_tokens=100)) == 0
    assert price_usage(price, Usage(input_tokens=1000)) == 1000 * C // 10**6
    assert price_usage(price, Usage(input_tokens=1001)) == 1001 * 2 * C // 10**6


PRIORITY = replace(
    GPT,
    service_tiers=(
        ("flex", ServiceTierPrice(input=1_250_000_000, output=5 * C)),
        ("priority", ServiceTierPrice(input=5 * C, output=20 * C, cached_input=2_500_000_000)),
    ),
)


def test_the_service_tier_the_response_reports_prices_the_request_not_the_one_requested() -> None:
    usage = Usage(input_tokens=1000, cached_input_tokens=500, output_tokens=100)
    base = price_usage(GPT, usage)
    assert price_usage(PRIORITY, replace(usage, service_tier="default")) == base  # asked priority, got default
    assert price_usage(PRIORITY, usage) == base  # no tier reported
    assert price_usage(PRIORITY, replace(usage, service_tier="scale")) == base  # a tier the price does not list
    assert (
        price_usage(PRIORITY, replace(usage, service_tier="priority"))
        == (500 * 5 * C + 500 * 2_500_000_000 + 100 * 20 * C) // 10**6
    )
    # flex: cached input defaults to the tier's own input rate
    assert price_usage(PRIORITY, replace(usage, service_tier="flex")) == (1000 * 1_250_000_000 + 100 * 5 * C) // 10**6


def test_a_service_tier_with_its_own_context_tiers() -> None:
    flex = ServiceTierPrice(
        input=C, output=C, context_tiers=(ContextTier(above_input_tokens=10, input=3 * C, output=C),)
    )
    price = replace(GEMINI_PRO, service_tiers=(("flex", flex),))
    assert price_usage(price, Usage(input_tokens=10, service_tier="flex")) == 10 * C // 10**6
    assert price_usage(price, Usage(input_tokens=11, service_tier="flex")) == 11 * 3 * C // 10**6


def test_fees_per_request_per_web_search_and_per_image_are_added_after_the_one_rounding() -> None:
    price = ModelPrice(input=1, output=0, per_request=7, per_web_search=10_000_000, per_image=40_000_000)
    usage = Usage(input_tokens=1_500_000, web_search_calls=3, images=2)  # 1.5 nanocredits -> 2
    assert price_usage(price, usage) == 2 + 3 * 10_000_000 + 2 * 40_000_000 + 7
    assert price_counts(price, 1_500_000, 0, 0, 0, 2, 0, 0, 3, None) == price_usage(price, usage)


def test_provider_cost_prices_the_same_new_fields() -> None:
    cost = ModelPrice(
        input=C,
        output=C,
        cache_write_5m=2 * C,
        per_web_search=5,
        service_tiers=(("flex", ServiceTierPrice(input=0, output=0)),),
    )
    price = replace(SONNET, provider_cost=cost)
    usage = Usage(input_tokens=2_000_000, cache_write_5m_tokens=1_000_000, web_search_calls=2)
    assert provider_cost_of(price, usage) == 1 * C + 2 * C + 10
    assert provider_cost_of(price, replace(usage, service_tier="flex")) == 10


def test_an_old_price_and_usage_keep_their_stored_form_and_new_fields_round_trip() -> None:
    old = {
        "input": 1,
        "output": 2,
        "cached_input": None,
        "reasoning": None,
        "per_image": 0,
        "per_request": 0,
        "max_output_tokens": 4096,
        "provider_cost": None,
    }
    assert ModelPrice.from_dict(old).to_dict() == old
    assert list(ModelPrice.from_dict(old).to_dict()) == list(old)
    old_usage = {
        "input_tokens": 5,
        "cached_input_tokens": 1,
        "output_tokens": 3,
        "reasoning_tokens": 0,
        "images": 0,
        "source": "provider",
    }
    assert Usage.from_dict(old_usage).to_dict() == old_usage
    deep = replace(
        PRIORITY, cache_write_1h=9, per_web_search=3, context_tiers=GEMINI_PRO.context_tiers, provider_cost=GEMINI_PRO
    )
    assert ModelPrice.from_dict(deep.to_dict()) == deep
    usage = Usage(
        input_tokens=9,
        cache_write_5m_tokens=2,
        cache_write_1h_tokens=3,
        web_search_calls=1,
        service_tier="flex",
        flags=("total_derived", "cache_write_ttl_assumed"),
    )
    assert usage.flags == ("cache_write_ttl_assumed", "total_derived")
    assert Usage.from_dict(usage.to_dict()) == usage
    assert from_reported(reported(usage)) == usage
    assert list(reported(Usage(input_tokens=1))) == [
        "input_tokens",
        "cached_input_tokens",
        "output_tokens",
        "reasoning_tokens",
        "images",
        "source",
    ]


@pytest.mark.parametrize(
    ("build", "param"),
    [
        (lambda: ModelPrice(input=1, output=1, cache_write_5m=-1), "cache_write_5m"),
        (lambda: ModelPrice(input=1, output=1, per_web_search=10**20), "per_web_search"),
        (lambda: ContextTier(above_input_tokens=-1, input=1, output=1), "above_input_tokens"),
        (lambda: ContextTier(above_input_tokens=10, input=1, output=1, cache_write_1h=10**20), "cache_write_1h"),
        (
            lambda: ModelPrice(input=1, output=1, context_tiers=(ContextTier(5, 1, 1), ContextTier(5, 2, 2))),
            "context_tiers",
        ),
        (lambda: ModelPrice(input=1, output=1, service_tiers=(("default", ServiceTierPrice(1, 1)),)), "service_tiers"),
        (
            lambda: ModelPrice(input=1, output=1, service_tiers=(("flex", ServiceTierPrice(1, 1)),) * 2),
            "service_tiers",
        ),
    ],
)
def test_a_rate_threshold_or_tier_out_of_bounds_is_refused_by_name(build, param) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidPrice) as refused:
        build()
    assert refused.value.param == param


def test_usage_refuses_cache_reads_and_writes_beyond_its_input() -> None:
    with pytest.raises(ValueError, match="cannot exceed input_tokens"):
        Usage(input_tokens=10, cached_input_tokens=5, cache_write_5m_tokens=4, cache_write_1h_tokens=2)
    with pytest.raises(ValueError, match="web_search_calls"):
        Usage(web_search_calls=-1)


# --- properties -----------------------------------------------------------------------

rates = st.integers(0, 50 * C)
optional = st.none() | rates
tiers = st.lists(
    st.builds(
        ContextTier,
        above_input_tokens=st.integers(0, 400_000),
        input=rates,
        output=rates,
        cached_input=optional,
        reasoning=optional,
        cache_write_5m=optional,
        cache_write_1h=optional,
    ),
    max_size=3,
    unique_by=lambda tier: tier.above_input_tokens,
).map(tuple)
service_tier_prices = st.builds(
    ServiceTierPrice,
    input=rates,
    output=rates,
    cached_input=optional,
    reasoning=optional,
    cache_write_5m=optional,
    cache_write_1h=optional,
    context_tiers=tiers,
)
prices = st.builds(
    ModelPrice,
    input=rates,
    output=rates,
    cached_input=optional,
    reasoning=optional,
    per_image=st.integers(0, 10**8),
    per_request=st.integers(0, 10**8),
    cache_write_5m=optional,
    cache_write_1h=optional,
    per_web_search=st.integers(0, 10**8),
    context_tiers=tiers,
    service_tiers=st.dictionaries(st.sampled_from(["flex", "priority"]), service_tier_prices).map(
        lambda d: tuple(d.items())
    ),
)


@st.composite
def usages(draw: st.DrawFn, max_input: int = 500_000, max_output: int = 100_000, max_images: int = 4) -> Usage:
    input_tokens = draw(st.integers(0, max_input))
    cached = draw(st.integers(0, input_tokens))
    write_5m = draw(st.integers(0, input_tokens - cached))
    write_1h = draw(st.integers(0, input_tokens - cached - write_5m))
    output = draw(st.integers(0, max_output))
    return Usage(
        input_tokens=input_tokens,
        cached_input_tokens=cached,
        cache_write_5m_tokens=write_5m,
        cache_write_1h_tokens=write_1h,
        output_tokens=output,
        reasoning_tokens=draw(st.integers(0, output)),
        images=draw(st.integers(0, max_images)),
        web_search_calls=draw(st.integers(0, MAX_WEB_SEARCH_CALLS)),
        service_tier=draw(st.sampled_from([None, "default", "flex", "priority", "scale"])),
    )


def _rising(price: ModelPrice) -> ModelPrice:
    """``price`` with each context tier at least as dear, class by class, as the rates below it
    (as every provider's long-context tiers are), so growing a prompt never lowers a rate."""

    def lift(rates: list[ContextTier], floor: object) -> tuple[ContextTier, ...]:
        out: list[ContextTier] = []
        for tier in rates:
            below = out[-1] if out else floor
            out.append(
                replace(
                    tier,
                    input=max(tier.input, below.input),  # type: ignore[attr-defined]
                    output=max(tier.output, below.output),  # type: ignore[attr-defined]
                    cached_input=None,
                    reasoning=None,
                    cache_write_5m=None,
                    cache_write_1h=None,
                )
            )
        return tuple(out)

    base = replace(price, cached_input=None, reasoning=None, cache_write_5m=None, cache_write_1h=None)
    services = tuple(
        (
            name,
            replace(
                s,
                cached_input=None,
                reasoning=None,
                cache_write_5m=None,
                cache_write_1h=None,
                context_tiers=lift(list(s.context_tiers), s),
            ),
        )
        for name, s in price.service_tiers
    )
    return replace(base, context_tiers=lift(list(price.context_tiers), base), service_tiers=services)


GROWTHS = [
    ("input_tokens", ()),
    ("cached_input_tokens", ("input_tokens",)),
    ("cache_write_5m_tokens", ("input_tokens",)),
    ("cache_write_1h_tokens", ("input_tokens",)),
    ("output_tokens", ()),
    ("reasoning_tokens", ("output_tokens",)),
    ("images", ()),
    ("web_search_calls", ()),
]


@settings(max_examples=300)
@given(prices, usages(), st.sampled_from(GROWTHS), st.integers(1, 300_000))
def test_a_charge_is_never_negative_and_never_falls_when_a_count_grows(
    price: ModelPrice, usage: Usage, growth: tuple[str, tuple[str, ...]], more: int
) -> None:
    price = _rising(price)
    name, with_ = growth
    grown = replace(
        usage, **{name: getattr(usage, name) + more}, **{other: getattr(usage, other) + more for other in with_}
    )
    assert 0 <= price_usage(price, usage) <= price_usage(price, grown)


@settings(max_examples=300)
@given(
    prices,
    st.integers(0, 500_000),
    st.none() | st.integers(1, 100_000),
    st.integers(1, 3),
    st.integers(0, 4),
    st.data(),
)
def test_the_hold_bounds_the_charge_of_any_usage_within_the_requests_bounds(
    price: ModelPrice, prompt_bytes: int, max_tokens: int | None, choices: int, images: int, data: st.DataObject
) -> None:
    cap = max_tokens if max_tokens is not None else price.max_output_tokens
    usage = data.draw(usages(max_input=prompt_bytes, max_output=cap * choices, max_images=images))
    hold = price_usage(price, worst_case_usage(prompt_bytes, max_tokens, choices, price, images))
    assert price_usage(price, usage) <= hold
    assert provider_cost_of(price, usage) is None


@settings(max_examples=200)
@given(usages(max_input=10**6, max_output=10**6, max_images=2000), st.integers(0, 10**5), st.integers(1, 10**5))
def test_clamping_keeps_reads_and_writes_within_the_clamped_input(
    usage: Usage, prompt_bytes: int, max_tokens: int
) -> None:
    bound = usage_bound(prompt_bytes, max_tokens, 1, GEMINI_PRO, images=3)
    clamped = clamp_usage(replace(usage, web_search_calls=usage.web_search_calls * 2), bound)
    assert clamped.input_tokens <= bound.input_tokens and clamped.output_tokens <= bound.output_tokens
    assert clamped.web_search_calls <= MAX_WEB_SEARCH_CALLS and clamped.images <= 3
    assert (
        clamped.cached_input_tokens + clamped.cache_write_5m_tokens + clamped.cache_write_1h_tokens
        <= clamped.input_tokens
    )
    assert clamped.service_tier == usage.service_tier


def test_a_receipts_usage_shows_the_cache_writes_and_web_searches_it_was_charged_for() -> None:
    from uuid import uuid4

    from adapters.http.receipts import receipt_usage
    from application.billing import Receipt

    usage = Usage(input_tokens=10, cache_write_5m_tokens=4, cache_write_1h_tokens=3, web_search_calls=2)
    receipt = Receipt(uuid4(), 5, 5, 0, 1, True, usage)
    shown = receipt_usage(receipt, {"prompt_tokens": 10, "completion_tokens": 0, "total_tokens": 10})
    assert (shown["cache_write_5m_tokens"], shown["cache_write_1h_tokens"], shown["web_search_calls"]) == (4, 3, 2)
    plain = receipt_usage(replace(receipt, usage=Usage(input_tokens=10)), None)
    assert set(plain) == {
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "cost",
        "cost_decimal",
        "cost_nanocredits",
        "price_book_version",
        "usage_source",
    }
