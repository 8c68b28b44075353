"""A model's context window (``context_window``, tokens) on its price: optional, stored only
when set (an old price keeps its stored form), taken from a price file, the admin API and
``prices set --context-window``, refused by name when it is not a positive integer within
the token bound, shown by ``prices show`` and on the model objects of ``GET /v1/models``
and ``GET /v1/models/{id}`` when known (omitted when not)."""

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient

from adapters.bootstrap import build_services, in_memory_ledger
from adapters.http.app import create_app
from adapters.presenters import price_json
from adapters.settings import Settings
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.prices import Prices
from application.pricing_input import parse_price_file, price_from_credits, price_from_entry
from application.providers import ProviderRegistry
from domain.bounds import MAX_TOKENS
from domain.errors import InvalidRequest
from domain.pricing import InvalidPrice, ModelPrice, price_usage
from domain.usage import Usage
from tests.fakes.clock import FakeClock
from tests.support.gateway import REPO, gateway_env
from tests.unit.test_operator_input_http import Admin, build, refused

C = 10**9
OLD_STORED = {
    "input": C,
    "output": 2 * C,
    "cached_input": None,
    "reasoning": None,
    "per_image": 0,
    "per_request": 0,
    "max_output_tokens": 4096,
    "provider_cost": None,
}


def test_a_price_without_a_context_window_keeps_its_stored_form_and_one_with_it_round_trips() -> None:
    old = ModelPrice.from_dict(OLD_STORED)
    assert old.context_window is None and old.to_dict() == OLD_STORED
    known = ModelPrice.from_dict({**OLD_STORED, "context_window": 200_000})
    assert known.context_window == 200_000
    assert known.to_dict() == {**OLD_STORED, "context_window": 200_000}
    assert ModelPrice.from_dict(known.to_dict()) == known


def test_the_context_window_prices_nothing() -> None:
    usage = Usage(input_tokens=150_000, output_tokens=1_000)
    with_window = price_from_credits(input="3", output="15", context_window=100_000)
    assert price_usage(with_window, usage) == price_usage(price_from_credits(input="3", output="15"), usage)


@pytest.mark.parametrize("window", [0, -1, MAX_TOKENS + 1, True, "200000"])
def test_a_context_window_that_is_not_a_positive_token_count_is_refused_by_name(window: Any) -> None:
    with pytest.raises(InvalidPrice) as domain_refused:
        ModelPrice(input=1, output=1, context_window=window)
    assert domain_refused.value.param == "context_window"
    with pytest.raises(InvalidRequest) as file_refused:
        parse_price_file(json.dumps({"models": {"openai/x": {"input": "1", "output": "1", "context_window": window}}}))
    assert file_refused.value.param == "models.openai/x.context_window"


def test_a_price_file_and_an_entry_take_it_and_prices_show_lists_it() -> None:
    file = {
        "models": {
            "openai/x": {"input": "1", "output": "2", "context_window": 128_000},
            "openai/y": {"input": "1", "output": "2"},
        }
    }
    prices, _ = parse_price_file(json.dumps(file))
    assert (prices["openai/x"].context_window, prices["openai/y"].context_window) == (128_000, None)
    assert price_from_entry({"input": "1", "output": "1", "context_window": MAX_TOKENS}).context_window == MAX_TOKENS
    assert price_json(prices["openai/x"].to_dict())["context_window"] == 128_000
    assert "context_window" not in price_json(prices["openai/y"].to_dict())
    with pytest.raises(InvalidRequest) as refused_in_cost:
        price_from_entry(
            {"input": "1", "output": "1", "provider_cost": {"input": "1", "output": "1", "context_window": 5}}
        )
    assert refused_in_cost.value.param == "provider_cost.context_window"  # a provider's cost has no window


@pytest.fixture
def admin() -> Iterator[Admin]:
    yield from build(Settings())


def test_the_admin_price_route_takes_and_shows_it(admin: Admin) -> None:
    body = {"model": "anthropic/claude-sonnet-4", "input": "3", "output": "15", "context_window": 200_000}
    assert admin.call("POST", "/prices", json=body).status_code == 201
    assert admin.ledger.price_book().latest.price_for("anthropic/claude-sonnet-4").context_window == 200_000
    assert admin.call("GET", "/prices").json()["models"]["anthropic/claude-sonnet-4"]["context_window"] == 200_000
    refused(admin.call("POST", "/prices", json={**body, "context_window": 0}), 400, "invalid_request", "context_window")


def test_prices_set_takes_the_flag_and_prices_show_lists_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = gateway_env(tmp_path / "data", None)
    cli = [sys.executable, "-m", "adapters.cli.main"]

    def run(*args: str) -> tuple[int, dict[str, Any]]:
        done = subprocess.run([*cli, *args, "--json"], capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
        assert "Traceback" not in done.stdout + done.stderr, done.stderr
        return done.returncode, json.loads(done.stdout)

    assert run("init")[0] == 0
    assert (
        run("prices", "set", "openai/gpt-4o", "--input", "2.5", "--output", "10", "--context-window", "128000")[0] == 0
    )
    assert run("prices", "show")[1]["models"]["openai/gpt-4o"]["context_window"] == 128000
    status, error = run("prices", "set", "openai/gpt-4o", "--input", "1", "--output", "1", "--context-window", "0")
    assert status == 1 and "context_window must be an integer from 1" in error["error"]["message"], error
    text = subprocess.run([*cli, "prices", "show"], capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert "context_window 128000" in text.stdout


@pytest.fixture
def models() -> Iterator[openai.OpenAI]:
    ledger = in_memory_ledger(clock=FakeClock())
    ledger.initialise()
    registry = ProviderRegistry(ledger)
    registry.register_provider("openai", "openai", base_url=None, region=None, secret="sk-openai-0001")
    registry.register_provider("anthropic", "anthropic", base_url=None, region=None, secret="sk-ant-0001")
    prices = Prices(ledger)
    prices.set_price("openai/gpt-4o-mini", price_from_credits(input="0.15", output="0.6", context_window=128_000))
    prices.set_price("anthropic/claude-sonnet-4", price_from_credits(input="3", output="15"))
    prices.set_alias("fast", ["openai/gpt-4o-mini", "anthropic/claude-sonnet-4"])
    prices.set_alias("smart", ["anthropic/claude-sonnet-4", "openai/gpt-4o-mini"])
    Accounts(ledger).create_account("acme")
    key = ApiKeys(ledger).issue_api_key("acme").plaintext
    with TestClient(create_app(build_services(Settings(), ledger=ledger), run_projections=False)) as http:
        yield openai.OpenAI(api_key=key, base_url="http://testserver/v1", http_client=http)


def test_the_model_list_shows_the_window_where_the_price_knows_it_and_omits_it_elsewhere(
    models: openai.OpenAI,
) -> None:
    listed = {model.id: model.model_extra or {} for model in models.models.list()}
    assert listed["openai/gpt-4o-mini"]["context_window"] == 128_000
    assert listed["fast"]["context_window"] == 128_000  # the model the alias routes to first
    assert "context_window" not in listed["anthropic/claude-sonnet-4"] and "context_window" not in listed["smart"]
    assert (models.models.retrieve("openai/gpt-4o-mini").model_extra or {})["context_window"] == 128_000
    assert "context_window" not in (models.models.retrieve("smart").model_extra or {})
