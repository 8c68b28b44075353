"""A charge never exceeds what the request could have cost: usage a provider reports
beyond the request's bounds is charged at them, marked ``clamped`` and kept in full."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.billing import RequestBilling, RequestShape
from application.ledger import Ledger
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from domain.bounds import MAX_TOKENS
from domain.pricing import price_usage, worst_case_usage
from domain.usage import Usage
from domain.usage_bounds import INPUT_OVERHEAD_TOKENS, clamp_usage, usage_bound
from tests.support.routes import first_route

MODEL = "openai/gpt-test"
PRICE = price_from_credits(input="2", output="8", max_output_tokens=1000)


@pytest.fixture
def key(ledger: Ledger) -> str:
    ProviderRegistry(ledger).register_provider(
        "openai", "openai", base_url="http://127.0.0.1:9/v1", region=None, secret="sk-test-secret-0001"
    )
    Prices(ledger).set_price(MODEL, PRICE)
    Accounts(ledger).create_account("acme")
    Accounts(ledger).grant_credits("acme", 5 * 10**9)
    return ApiKeys(ledger).issue_api_key("acme").plaintext


def test_an_upstream_claiming_10_to_the_20_output_tokens_is_charged_at_max_tokens(
    ledger: Ledger, credits_billing: RequestBilling, key: str
) -> None:
    shape = RequestShape(model=MODEL, prompt_bytes=300, max_output_tokens=5, choices=1, stream=False)
    opened = credits_billing.open_request(key, shape)
    claimed = Usage(input_tokens=12, output_tokens=10**20)
    receipt = credits_billing.complete_request(opened, first_route(credits_billing, opened), claimed)

    assert receipt.usage == Usage(input_tokens=12, output_tokens=5, source="clamped")
    assert receipt.charge == 12 * 2_000 + 5 * 8_000  # not the account's whole balance
    assert ledger.get_account("acme").balance == 5 * 10**9 - receipt.charge
    details = ledger.find(opened.request_id).details
    assert details.usage is not None and details.usage.source == "clamped"
    assert details.reported_usage is not None and details.reported_usage.output_tokens == 10**20  # kept in full
    assert details.reported_usage.source == "provider"
    assert details.to_dict()["reported_usage"]["output_tokens"] == str(10**20)  # stored as text


def test_usage_within_the_bounds_is_charged_as_reported_and_not_marked(
    ledger: Ledger, credits_billing: RequestBilling, key: str
) -> None:
    shape = RequestShape(model=MODEL, prompt_bytes=300, max_output_tokens=5, choices=2, stream=False)
    opened = credits_billing.open_request(key, shape)
    usage = Usage(input_tokens=300 + INPUT_OVERHEAD_TOKENS, output_tokens=10)  # exactly at both bounds
    receipt = credits_billing.complete_request(opened, first_route(credits_billing, opened), usage)
    assert receipt.usage == usage
    assert ledger.find(opened.request_id).details.reported_usage is None
    assert "reported_usage" not in ledger.find(opened.request_id).details.to_dict()


def test_input_far_beyond_the_body_is_charged_at_the_body_bound_with_cached_tokens_inside_it(
    ledger: Ledger, credits_billing: RequestBilling, key: str
) -> None:
    shape = RequestShape(model=MODEL, prompt_bytes=100, max_output_tokens=None, choices=1, stream=False)
    opened = credits_billing.open_request(key, shape)
    claimed = Usage(input_tokens=10**15, cached_input_tokens=10**15, output_tokens=2000, reasoning_tokens=2000)
    receipt = credits_billing.complete_request(opened, first_route(credits_billing, opened), claimed)
    bound = 100 + INPUT_OVERHEAD_TOKENS
    # the request set no max_tokens: the model's output limit from the price book bounds it
    assert receipt.usage == Usage(
        input_tokens=bound, cached_input_tokens=bound, output_tokens=1000, reasoning_tokens=1000, source="clamped"
    )


def test_track_mode_clamps_an_unpriced_model_to_the_largest_count_the_read_models_store(
    ledger: Ledger, track_billing: RequestBilling, key: str
) -> None:
    shape = RequestShape(model="openai/unpriced", prompt_bytes=100, max_output_tokens=None, choices=1, stream=False)
    opened = track_billing.open_request(key, shape)
    receipt = track_billing.complete_request(
        opened, first_route(track_billing, opened), Usage(input_tokens=7, output_tokens=10**20)
    )
    assert receipt.usage == Usage(input_tokens=7, output_tokens=MAX_TOKENS, source="clamped")
    assert receipt.charge == 0


counts = st.integers(min_value=0, max_value=10**22)


@settings(max_examples=300, deadline=None)
@given(
    prompt_bytes=st.integers(min_value=0, max_value=10 * 1024 * 1024),
    max_tokens=st.none() | st.integers(min_value=1, max_value=MAX_TOKENS),
    choices=st.integers(min_value=1, max_value=128),
    input_tokens=counts,
    cached=counts,
    output_tokens=counts,
    reasoning=counts,
    images=counts,
)
def test_a_clamped_charge_never_exceeds_the_worst_case_of_its_bounds(
    prompt_bytes: int,
    max_tokens: int | None,
    choices: int,
    input_tokens: int,
    cached: int,
    output_tokens: int,
    reasoning: int,
    images: int,
) -> None:
    usage = Usage(
        input_tokens=input_tokens,
        cached_input_tokens=min(cached, input_tokens),
        output_tokens=output_tokens,
        reasoning_tokens=min(reasoning, output_tokens),
        images=images,
    )
    bound = usage_bound(prompt_bytes, max_tokens, choices, PRICE)
    charged = clamp_usage(usage, bound)

    assert charged.input_tokens <= bound.input_tokens <= MAX_TOKENS
    assert charged.output_tokens <= bound.output_tokens <= MAX_TOKENS
    assert charged.images <= bound.images
    assert charged.cached_input_tokens <= charged.input_tokens
    assert charged.reasoning_tokens <= charged.output_tokens
    worst = worst_case_usage(prompt_bytes + INPUT_OVERHEAD_TOKENS, max_tokens, choices, PRICE)
    assert price_usage(PRICE, charged) <= price_usage(PRICE, worst)
    if charged is usage:
        assert usage.source == "provider"
    else:
        assert charged.source == "clamped" and usage != charged
