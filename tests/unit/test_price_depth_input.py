"""The deeper rates from operator input: a price file, ``prices set``'s flags and the admin
API's price routes take cache-write rates, the web-search fee, context tiers and service
tiers (in ``provider_cost`` too), exactly; an unknown field at any level is refused by
name; ``prices show`` shows them."""

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.presenters import format_quarters, price_json
from adapters.settings import Settings
from application.pricing_input import parse_price_file, parse_tier_flag, price_from_entry
from domain.errors import InvalidRequest
from domain.pricing import ContextTier, ModelPrice, ServiceTierPrice, price_usage
from domain.usage import Usage
from tests.support.gateway import REPO, gateway_env
from tests.unit.test_operator_input_http import Admin, build, refused

C = 10**9

FILE: dict[str, Any] = {
    "models": {
        "anthropic/claude-sonnet-4": {
            "input": "3",
            "cached_input": "0.30",
            "output": "15",
            "cache_write": "3.75",
            "cache_write_1h": "6",
            "per_web_search": "0.01",
            "per_request": "0.000001",
        },
        "google/gemini-2.5-pro": {
            "input": "1.25",
            "cached_input": "0.3125",
            "output": "10",
            "context_tiers": [{"above_input_tokens": 200000, "input": "2.5", "cached_input": "0.625", "output": "15"}],
            "provider_cost": {
                "input": "1",
                "output": "8",
                "context_tiers": [{"above_input_tokens": 200000, "input": "2", "output": "12"}],
            },
        },
        "openai/gpt-5": {
            "input": "1.25",
            "output": "10",
            "service_tiers": {
                "flex": {"input": "0.625", "output": "5"},
                "priority": {"input": "2.5", "output": "20", "cached_input": "0.25"},
            },
        },
    }
}

GEMINI = ModelPrice(
    input=1_250_000_000,
    cached_input=312_500_000,
    output=10 * C,
    context_tiers=(ContextTier(200_000, input=2_500_000_000, output=15 * C, cached_input=625_000_000),),
    provider_cost=ModelPrice(input=C, output=8 * C, context_tiers=(ContextTier(200_000, input=2 * C, output=12 * C),)),
)


def test_a_price_file_with_every_deeper_rate_is_read_exactly() -> None:
    prices, _ = parse_price_file(json.dumps(FILE))
    assert prices["anthropic/claude-sonnet-4"] == ModelPrice(
        input=3 * C,
        cached_input=300_000_000,
        output=15 * C,
        cache_write_5m=3_750_000_000,
        cache_write_1h=6 * C,
        per_web_search=10_000_000,
        per_request=1000,
    )
    assert prices["google/gemini-2.5-pro"] == GEMINI
    assert prices["openai/gpt-5"].service_tiers == (
        ("flex", ServiceTierPrice(input=625_000_000, output=5 * C)),
        ("priority", ServiceTierPrice(input=2_500_000_000, output=20 * C, cached_input=250_000_000)),
    )


def test_cache_write_alone_sets_the_5_minute_rate_and_the_hour_stays_2x_input() -> None:
    price = price_from_entry({"input": "3", "output": "15", "cache_write": "4"})
    assert (price.cache_write_5m, price.cache_write_1h) == (4 * C, None)
    usage = Usage(input_tokens=2_000_000, cache_write_5m_tokens=10**6, cache_write_1h_tokens=10**6)
    assert price_usage(price, usage) == 4 * C + 6 * C


@pytest.mark.parametrize(
    ("change", "param"),
    [
        (lambda m: m["google/gemini-2.5-pro"]["context_tiers"][0].update(ouput="1"), "context_tiers.0.ouput"),
        (
            lambda m: m["google/gemini-2.5-pro"]["context_tiers"][0].pop("above_input_tokens"),
            "context_tiers.0.above_input_tokens",
        ),
        (
            lambda m: m["google/gemini-2.5-pro"]["context_tiers"][0].update(above_input_tokens="1"),
            "context_tiers.0.above_input_tokens",
        ),
        (
            lambda m: m["google/gemini-2.5-pro"]["context_tiers"].append(
                {"above_input_tokens": 200000, "input": "1", "output": "1"}
            ),
            "context_tiers",
        ),
        (
            lambda m: m["google/gemini-2.5-pro"]["provider_cost"]["context_tiers"][0].update(input="-1"),
            "provider_cost.context_tiers.0.input",
        ),
        (
            lambda m: m["google/gemini-2.5-pro"]["provider_cost"].update(max_output_tokens=5),
            "provider_cost.max_output_tokens",
        ),
        (lambda m: m["openai/gpt-5"]["service_tiers"]["flex"].update(per_image="1"), "service_tiers.flex.per_image"),
        (lambda m: m["openai/gpt-5"]["service_tiers"]["flex"].pop("output"), "service_tiers.flex.output"),
        (lambda m: m["openai/gpt-5"]["service_tiers"].update(default={"input": "1", "output": "1"}), "service_tiers"),
        (lambda m: m["anthropic/claude-sonnet-4"].update(cache_write_5m="3.75"), "cache_write"),
        (lambda m: m["anthropic/claude-sonnet-4"].update(cache_write_1h="100000.000000001"), "cache_write_1h"),
        (lambda m: m["anthropic/claude-sonnet-4"].update(per_web_search="-0.01"), "per_web_search"),
        (lambda m: m["anthropic/claude-sonnet-4"].update(cache_writes="1"), "cache_writes"),
    ],
)
def test_a_bad_deeper_rate_is_refused_naming_the_field(change, param: str) -> None:  # type: ignore[no-untyped-def]
    document = json.loads(json.dumps(FILE))
    change(document["models"])
    with pytest.raises(InvalidRequest) as refused_:
        parse_price_file(json.dumps(document))
    param_ = str(refused_.value.param)
    model = next(m for m in FILE["models"] if param_.startswith(f"models.{m}."))
    assert refused_.value.param == f"models.{model}.{param}", refused_.value


def test_tier_flags_read_as_a_price_files_tier() -> None:
    assert parse_tier_flag("200000:input=2.5,output=15", "--context-tier", threshold=True) == (
        "200000",
        {"above_input_tokens": 200000, "input": "2.5", "output": "15"},
    )
    assert parse_tier_flag("flex:input=1,output=4", "--service-tier", threshold=False)[1] == {
        "input": "1",
        "output": "4",
    }
    for bad in ("200000", "x:input=1", "200000:input", "200000:input=1,input=2", ":input=1"):
        with pytest.raises(InvalidRequest) as refused_:
            parse_tier_flag(bad, "--context-tier", threshold=True)
        assert refused_.value.param == "--context-tier"


def test_price_json_shows_cache_write_defaults_exactly_and_the_tiers() -> None:
    assert format_quarters(5) == "0.00000000125" and format_quarters(8) == "0.000000002"
    shown = price_json(GEMINI.to_dict())
    assert shown["cache_write_5m"] == "1.562500000" and shown["cache_write_1h"] == "2.500000000"
    assert shown["context_tiers"][0]["above_input_tokens"] == 200000
    assert shown["context_tiers"][0]["cache_write_5m"] == "3.125000000"
    assert shown["provider_cost"]["context_tiers"][0]["input"] == "2.000000000"
    assert "cache_write_5m" not in price_json(ModelPrice(input=1, output=1).to_dict())  # an old price shows as before


@pytest.fixture
def admin() -> Iterator[Admin]:
    yield from build(Settings())


def test_the_admin_price_route_takes_a_price_file_entry(admin: Admin) -> None:
    body: dict[str, Any] = {"model": "google/gemini-2.5-pro", **FILE["models"]["google/gemini-2.5-pro"]}
    response = admin.call("POST", "/prices", json=body)
    assert response.status_code == 201, response.text
    assert admin.ledger.price_book().latest.price_for("google/gemini-2.5-pro") == GEMINI
    shown = admin.call("GET", "/prices").json()["models"]["google/gemini-2.5-pro"]
    assert shown["context_tiers"][0]["output"] == "15.000000000"
    bad = {**body, "context_tiers": [{"above_input_tokens": 1, "input": "1", "output": "1", "bogus": "1"}]}
    refused(admin.call("POST", "/prices", json=bad), 400, "invalid_request", "context_tiers.0.bogus")
    refused(
        admin.call("POST", "/prices", json={**body, "per_web_search": 0.01}), 400, "invalid_request", "per_web_search"
    )
    refused(admin.call("POST", "/prices", json={**body, "cache_writes": "1"}), 400, "invalid_request")


def test_prices_set_takes_the_deeper_rates_as_flags_and_prices_show_lists_them(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = gateway_env(tmp_path / "data", None)
    cli = [sys.executable, "-m", "adapters.cli.main"]

    def run(*args: str) -> tuple[int, dict[str, Any]]:
        done = subprocess.run([*cli, *args, "--json"], capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
        assert "Traceback" not in done.stdout + done.stderr, done.stderr
        return done.returncode, json.loads(done.stdout)

    assert run("init")[0] == 0
    status, _ = run(
        "prices", "set", "anthropic/claude-sonnet-4", "--input", "3", "--output", "15",
        "--cache-write", "3.75", "--cache-write-1h", "6", "--per-web-search", "0.01", "--per-request", "0.000001",
        "--context-tier", "200000:input=6,output=22.5", "--service-tier", "priority:input=5,output=25",
    )  # fmt: skip
    assert status == 0
    shown = run("prices", "show")[1]["models"]["anthropic/claude-sonnet-4"]
    assert (shown["cache_write_5m"], shown["cache_write_1h"]) == ("3.750000000", "6.000000000")
    assert (shown["per_web_search"], shown["per_request"]) == ("0.010000000", "0.000001000")
    assert (
        shown["context_tiers"][0]["above_input_tokens"] == 200000
        and shown["context_tiers"][0]["output"] == "22.500000000"
    )
    assert shown["service_tiers"]["priority"]["input"] == "5.000000000"
    status, error = run(
        "prices", "set", "anthropic/x", "--input", "1", "--output", "1", "--context-tier", "lots:input=1"
    )
    assert status == 1 and "--context-tier" in error["error"]["message"], error
    text = subprocess.run([*cli, "prices", "show"], capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert "service tier priority: input 5.000000000" in text.stdout and "above 200000 input tokens" in text.stdout


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.text(max_size=12) | st.sampled_from(["1", "2.5"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=20), inner, max_size=4),
    max_leaves=12,
)
entry_keys = st.sampled_from(
    [
        "input",
        "output",
        "cache_write",
        "cache_write_1h",
        "context_tiers",
        "service_tiers",
        "provider_cost",
        "above_input_tokens",
    ]
)


@settings(max_examples=300)
@given(st.dictionaries(entry_keys, json_values, max_size=6), st.dictionaries(entry_keys, json_values, max_size=3))
def test_any_json_entry_is_a_price_or_an_invalid_request_naming_a_field(
    entry: dict[str, Any], tier: dict[str, Any]
) -> None:
    candidates = [entry, {"input": "1", "output": "1", **entry}, {"input": "1", "output": "1", "context_tiers": [tier]}]
    candidates.append({"input": "1", "output": "1", "service_tiers": {"flex": tier}})
    for candidate in candidates:
        try:
            price = price_from_entry(candidate)
        except InvalidRequest as refused_:
            assert refused_.param, refused_
        else:
            assert ModelPrice.from_dict(price.to_dict()) == price
