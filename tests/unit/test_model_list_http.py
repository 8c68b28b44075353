"""``GET /v1/models`` and ``GET /v1/models/{id}`` through the official ``openai`` SDK
(``models.list``, ``models.retrieve``) over the in-process app: the models the caller's key
may use, each with the caller's prices as decimal text and its output limit; aliases priced
as the model they route to first; anything else a 404 in OpenAI's error shape."""

from collections.abc import Iterator

import openai
import pytest
from fastapi.testclient import TestClient

from adapters.bootstrap import build_services, in_memory_ledger
from adapters.http.app import create_app
from adapters.settings import Settings
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from tests.fakes.clock import FakeClock


@pytest.fixture
def client(tmp_path) -> Iterator[tuple[openai.OpenAI, openai.OpenAI]]:
    """SDK clients for a key that may use every model and for one limited to ``openai/*``."""
    ledger = in_memory_ledger(clock=FakeClock())
    ledger.initialise()
    registry = ProviderRegistry(ledger)
    registry.register_provider("openai", "openai", base_url=None, region=None, secret="sk-openai-0001")
    registry.register_provider("anthropic", "anthropic", base_url=None, region=None, secret="sk-ant-0001")
    prices = Prices(ledger)
    prices.set_price(
        "openai/gpt-4o-mini",
        price_from_credits(input="0.15", cached_input="0.075", output="0.6", max_output_tokens=16384),
    )
    prices.set_price("anthropic/claude-sonnet-4", price_from_credits(input="3", output="15", per_request="0.001"))
    prices.set_alias("smart", ["anthropic/claude-sonnet-4", "openai/gpt-4o-mini"])
    Accounts(ledger).create_account("acme")
    keys = ApiKeys(ledger)
    every = keys.issue_api_key("acme").plaintext
    limited = keys.issue_api_key("acme", models=["openai/*"]).plaintext
    services = build_services(Settings(data_dir=tmp_path), ledger=ledger)
    with TestClient(create_app(services, run_projections=False)) as http:
        yield (
            openai.OpenAI(api_key=every, base_url="http://testserver/v1", http_client=http),
            openai.OpenAI(api_key=limited, base_url="http://testserver/v1", http_client=http),
        )


def test_the_list_carries_prices_output_limits_and_aliases(client) -> None:
    every, limited = client
    models = {model.id: model for model in every.models.list()}
    assert list(models) == ["anthropic/claude-sonnet-4", "openai/gpt-4o-mini", "smart"]
    mini = models["openai/gpt-4o-mini"].model_extra
    assert mini["pricing"] == {
        "unit": "credits per 1M tokens",
        "input": "0.150000000",
        "cached_input": "0.075000000",
        "output": "0.600000000",
    }
    assert mini["max_output_tokens"] == 16384
    sonnet = models["anthropic/claude-sonnet-4"].model_extra
    assert sonnet["pricing"]["per_request"] == "0.001000000" and sonnet["max_output_tokens"] == 4096
    assert models["smart"].owned_by == "alias" and models["smart"].model_extra["pricing"] == sonnet["pricing"]
    assert [model.id for model in limited.models.list()] == ["openai/gpt-4o-mini"]


def test_retrieve_answers_one_model_and_404s_any_other(client) -> None:
    every, limited = client
    mini = every.models.retrieve("openai/gpt-4o-mini")
    assert (mini.id, mini.object, mini.owned_by) == ("openai/gpt-4o-mini", "model", "openai")
    assert mini.model_extra["pricing"]["output"] == "0.600000000"
    assert every.models.retrieve("smart").owned_by == "alias"
    for caller, model in ((every, "openai/gpt-5"), (every, "nobody"), (limited, "anthropic/claude-sonnet-4")):
        with pytest.raises(openai.NotFoundError) as refused:
            caller.models.retrieve(model)
        error = refused.value.body
        assert isinstance(error, dict) and error["code"] == "model_not_found"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(api_key="thk_wrong", base_url=str(every.base_url), http_client=every._client).models.retrieve(
            "openai/gpt-4o-mini"
        )
