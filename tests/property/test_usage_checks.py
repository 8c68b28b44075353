"""domain/usage.py checks every count of a ``Usage`` on a fast path (plain ints, no flags)
and falls back to the field-by-field checks otherwise; domain/pricing.py prices a price
without tiers on a fast path too. Both must decide exactly what the long way decides."""

from enum import IntEnum
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.pricing import ModelPrice, ServiceTierPrice, price_usage, worst_case_usage
from domain.usage import COUNT_FIELDS, Usage


class Level(IntEnum):
    TWO = 2


counts = st.one_of(
    st.integers(-3, 10**12),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-3, max_value=10),
    st.none(),
    st.just("7"),
    st.just(Level.TWO),
)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@given(st.fixed_dictionaries({name: counts for name in COUNT_FIELDS}))
def test_a_usage_refuses_exactly_the_counts_that_are_not_non_negative_integers(given_counts: dict[str, Any]) -> None:
    # only the count checks are asked here: no cache or reasoning tokens beyond their totals
    for part, whole in (("cached_input_tokens", "input_tokens"), ("reasoning_tokens", "output_tokens")):
        if _is_count(given_counts[part]) and _is_count(given_counts[whole]) and given_counts[part]:
            given_counts[part] = 0
    for write in ("cache_write_5m_tokens", "cache_write_1h_tokens"):
        if _is_count(given_counts[write]) and given_counts[write]:
            given_counts[write] = 0
    first_bad = next((name for name in COUNT_FIELDS if not _is_count(given_counts[name])), None)
    if first_bad is None:
        usage = Usage(**given_counts)
        assert all(getattr(usage, name) == given_counts[name] for name in COUNT_FIELDS)
        return
    with pytest.raises(ValueError, match=f"usage.{first_bad} must be a non-negative integer"):
        Usage(**given_counts)


@given(st.lists(st.sampled_from(["output_capped", "total_derived", "field_invalid"]), max_size=5))
def test_a_usages_flags_are_kept_sorted_and_unique_however_they_are_given(flags: list[str]) -> None:
    assert Usage(flags=flags).flags == tuple(sorted(set(flags)))  # type: ignore[arg-type]  # a list, as callers may
    assert Usage(flags=tuple(flags)).flags == tuple(sorted(set(flags)))


rates = st.integers(0, 10**12)


@given(
    rates,
    rates,
    st.none() | rates,
    st.none() | rates,
    st.none() | rates,
    st.integers(0, 10**6),
    st.none() | st.integers(1, 10**5),
    st.integers(1, 8),
    st.integers(0, 4),
)
def test_the_hold_of_a_price_without_tiers_is_the_one_every_tier_pair_is_compared_for(
    input_rate: int,
    output_rate: int,
    cached: int | None,
    write_5m: int | None,
    write_1h: int | None,
    prompt_bytes: int,
    max_tokens: int | None,
    choices: int,
    images: int,
) -> None:
    plain = ModelPrice(
        input=input_rate,
        output=output_rate,
        cached_input=cached,
        cache_write_5m=write_5m,
        cache_write_1h=write_1h,
        per_image=3,
    )
    # the same rates listed again as a service tier: every (service tier, context tier) pair is compared
    same = ServiceTierPrice(
        input=input_rate, output=output_rate, cached_input=cached, cache_write_5m=write_5m, cache_write_1h=write_1h
    )
    compared = ModelPrice(**{**plain.to_dict(), "provider_cost": None}, service_tiers=(("flex", same),))
    fast = worst_case_usage(prompt_bytes, max_tokens, choices, plain, images)
    slow = worst_case_usage(prompt_bytes, max_tokens, choices, compared, images)
    assert price_usage(plain, fast) == price_usage(compared, slow)
    assert fast.service_tier is None and fast.source == "estimated"
