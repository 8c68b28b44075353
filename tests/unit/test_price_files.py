import json

import pytest

from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.billing import RequestBilling, RequestShape
from application.ledger import Ledger
from application.prices import Prices
from application.pricing_input import parse_price_file
from application.providers import ProviderRegistry
from domain.errors import InvalidRequest
from domain.pricing import ModelPrice, price_usage, provider_cost_of, worst_case_usage
from domain.usage import Usage
from tests.fakes.clock import FakeClock
from tests.support.routes import first_route

FILE = {
    "effective_at": "2026-12-01T00:00:00Z",
    "models": {
        "openai/o3": {
            "input": "2",
            "cached_input": "0.5",
            "output": "8",
            "reasoning": "10",
            "max_output_tokens": 1000,
            "provider_cost": {"input": "1.5", "output": "6"},
        },
        "openai/dall-e-3": {"input": 0, "output": 0, "per_image": "0.04"},
    },
}


def test_a_price_file_is_read_exactly() -> None:
    prices, effective_at = parse_price_file(json.dumps(FILE))
    o3 = prices["openai/o3"]
    assert (o3.input, o3.cached_input, o3.output, o3.reasoning) == (2 * 10**9, 5 * 10**8, 8 * 10**9, 10 * 10**9)
    assert o3.provider_cost == ModelPrice(input=15 * 10**8, output=6 * 10**9)
    assert prices["openai/dall-e-3"].per_image == 40_000_000
    assert effective_at.isoformat() == "2026-12-01T00:00:00+00:00"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f["models"]["openai/o3"].update(imput="1"), "unknown field"),
        (lambda f: f["models"]["openai/o3"].update(input="-1"), "negative"),
        (lambda f: f["models"]["openai/o3"].pop("output"), "'output' is required"),
        (lambda f: f.update(models={}), "non-empty"),
        (lambda f: f.update(effective_at="tomorrow"), "ISO 8601"),
        (lambda f: f.update(extra=1), "unknown field"),
        (lambda f: f["models"]["openai/o3"]["provider_cost"].update(bogus="1"), "provider_cost"),
    ],
)
def test_a_bad_price_file_is_refused_with_the_reason(change, message: str) -> None:
    document = json.loads(json.dumps(FILE))
    change(document)
    with pytest.raises(InvalidRequest, match=message):
        parse_price_file(json.dumps(document))


def test_floats_and_malformed_json_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="not JSON floats"):
        parse_price_file('{"models": {"a/b": {"input": 0.1, "output": "1"}}}')
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        parse_price_file('{"models": ')


def test_reasoning_tokens_are_priced_at_their_own_rate_and_never_twice() -> None:
    price = ModelPrice(input=0, output=1_000_000, reasoning=3_000_000)
    assert price_usage(price, Usage(output_tokens=10, reasoning_tokens=4)) == 6 * 1 + 4 * 3


def test_the_hold_bounds_output_at_the_dearer_of_output_and_reasoning() -> None:
    price = ModelPrice(input=0, output=1_000_000, reasoning=3_000_000)
    worst = price_usage(price, worst_case_usage(0, 100, 1, price))
    assert worst == 300 and price_usage(price, Usage(output_tokens=100, reasoning_tokens=100)) <= worst


def test_provider_cost_is_priced_by_the_same_rule() -> None:
    prices, _ = parse_price_file(json.dumps(FILE))
    usage = Usage(input_tokens=1000, output_tokens=500)
    assert provider_cost_of(prices["openai/o3"], usage) == 1000 * 1500 + 500 * 6000
    assert provider_cost_of(prices["openai/dall-e-3"], usage) is None


def test_each_request_records_its_provider_cost_beside_its_charge(
    ledger: Ledger, credits_billing: RequestBilling, clock: FakeClock
) -> None:
    ProviderRegistry(ledger).register_provider("openai", "openai", base_url=None, region=None, secret="sk-openai-aaaa")
    prices, _ = parse_price_file(json.dumps({**FILE, "effective_at": None}))
    Prices(ledger).publish_prices(prices)
    Accounts(ledger).create_account("acme", starter_credits=10**12)
    key = ApiKeys(ledger).issue_api_key("acme").plaintext
    opened = credits_billing.open_request(key, RequestShape("openai/o3", 100, 100, 1, False))
    receipt = credits_billing.complete_request(
        opened, first_route(credits_billing, opened), Usage(input_tokens=100, output_tokens=50, reasoning_tokens=20)
    )
    details = ledger.get_request_record(opened.request_id).details
    assert details.charge == receipt.charge == 100 * 2000 + 30 * 8000 + 20 * 10000
    assert details.provider_cost == 100 * 1500 + 50 * 6000
