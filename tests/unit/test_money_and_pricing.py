from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.bounds import MAX_AMOUNT
from domain.money import InvalidAmount, format_credits, parse_credits
from domain.pricing import ModelPrice, price_usage, worst_case_usage
from domain.usage import Usage


def test_credits_text_converts_to_exact_nanocredits() -> None:
    assert parse_credits("2.5") == 2_500_000_000
    assert parse_credits("0.000000001") == 1
    assert parse_credits(7) == 7_000_000_000
    assert parse_credits(Decimal("1e-9")) == 1


@pytest.mark.parametrize("bad", ["0.0000000001", "abc", "NaN", "Infinity", "-1", ""])
def test_inexact_or_negative_amounts_are_refused(bad: str) -> None:
    with pytest.raises(InvalidAmount):
        parse_credits(bad)


def test_floats_are_refused_in_the_money_path() -> None:
    with pytest.raises(InvalidAmount):
        parse_credits(0.1)  # type: ignore[arg-type]


@given(st.integers(min_value=-MAX_AMOUNT, max_value=MAX_AMOUNT))
def test_formatting_round_trips_exactly(amount: int) -> None:
    assert parse_credits(format_credits(amount), allow_negative=True) == amount


@given(st.integers(min_value=MAX_AMOUNT + 1, max_value=10**40), st.booleans())
def test_amounts_past_the_bound_are_refused_exactly_past_it(amount: int, negative: bool) -> None:
    with pytest.raises(InvalidAmount, match="above the maximum"):
        parse_credits(format_credits(-amount if negative else amount), allow_negative=True)


def test_charge_is_input_times_input_rate_plus_output_times_output_rate() -> None:
    price = ModelPrice(input=parse_credits("3"), output=parse_credits("15"))
    usage = Usage(input_tokens=1_000, output_tokens=500)
    # 1,000 × 3 credits/1M + 500 × 15 credits/1M = 0.003 + 0.0075 credits
    assert price_usage(price, usage) == 10_500_000


def test_cached_input_is_priced_at_its_own_rate_and_never_twice() -> None:
    price = ModelPrice(input=1_000_000, output=0, cached_input=250_000)
    usage = Usage(input_tokens=1_000, cached_input_tokens=400)
    assert price_usage(price, usage) == 600 + 100


def test_reasoning_tokens_are_part_of_output_not_extra() -> None:
    price = ModelPrice(input=0, output=2_000_000)
    assert price_usage(price, Usage(output_tokens=10, reasoning_tokens=8)) == 20


def test_the_one_rounding_is_half_up_once_per_charge() -> None:
    price = ModelPrice(input=1, output=1)  # one nanocredit per 1M tokens
    assert price_usage(price, Usage(input_tokens=499_999)) == 0
    assert price_usage(price, Usage(input_tokens=500_000)) == 1
    # the sum is rounded, not each term: 0.3 + 0.3 → 1 (not 0 + 0)
    assert price_usage(price, Usage(input_tokens=300_000, output_tokens=300_000)) == 1


@given(st.integers(0, 10**7), st.integers(0, 10**7), st.integers(0, 10**12), st.integers(0, 10**12), st.integers(0, 50))
def test_charge_is_within_half_a_nanocredit_of_the_exact_value(
    inp: int, out: int, in_rate: int, out_rate: int, images: int
) -> None:
    price = ModelPrice(input=in_rate, output=out_rate, per_image=7)
    exact = Decimal(inp * in_rate + out * out_rate) / Decimal(1_000_000) + images * 7
    charged = price_usage(price, Usage(input_tokens=inp, output_tokens=out, images=images))
    assert isinstance(charged, int)
    assert abs(Decimal(charged) - exact) <= Decimal("0.5")


@given(st.integers(0, 10**6), st.integers(1, 10**5), st.integers(1, 8), st.integers(0, 10**6), st.integers(0, 10**6))
def test_worst_case_covers_any_usage_within_the_request_bounds(
    prompt_bytes: int, max_tokens: int, n: int, used_in: int, used_out: int
) -> None:
    price = ModelPrice(input=1_000_000, output=3_000_000)
    worst = price_usage(price, worst_case_usage(prompt_bytes, max_tokens, n, price))
    actual = Usage(input_tokens=min(used_in, prompt_bytes), output_tokens=min(used_out, max_tokens * n))
    assert price_usage(price, actual) <= worst


def test_usage_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError):
        Usage(input_tokens=1, cached_input_tokens=2)
    with pytest.raises(ValueError):
        Usage(output_tokens=-1)
