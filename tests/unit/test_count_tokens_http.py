"""``POST /v1/messages/count_tokens`` through the official ``anthropic`` SDK
(``client.messages.count_tokens``) over the in-process app: an Anthropic model is counted
by the provider (the fake Anthropic upstream saw the request, the operator's credential and
the provider's model name; the answer is its count), any other model is estimated by the
gateway and marked so; 401/403/404 in Anthropic's shape; never held, charged or recorded;
and a request of the key's requests-per-minute limit."""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import pytest
from fastapi.testclient import TestClient

from adapters.bootstrap import build_services, in_memory_ledger
from adapters.http.count_tokens import shape_of
from adapters.settings import Settings
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.ledger import Ledger
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from domain.estimation import tokens_for_chars
from tests.fakes.anthropic_count_tokens import FakeCountingAnthropicUpstream
from tests.fakes.anthropic_upstream import AnthropicScript, count_input_tokens
from tests.fakes.clock import FakeClock
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.unit.test_key_http import in_process_app

ANTHROPIC_SECRET = "sk-ant-count-tokens-secret-0001"
OPENAI_SECRET = "sk-openai-count-tokens-secret-0001"
CLAUDE = "anthropic/claude-sonnet-4-6"
GPT = "openai/gpt-4o-mini"
MESSAGES: list[Any] = [{"role": "user", "content": "How many tokens is this sentence, roughly?"}]
TOOLS: list[Any] = [
    {
        "name": "get_weather",
        "description": "Weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]
STARTER = 5 * 10**9


@dataclass
class Setup:
    http: TestClient
    ledger: Ledger
    anthropic_upstream: FakeCountingAnthropicUpstream
    openai_upstream: FakeOpenAIUpstream
    key: str
    key_id: str
    limited: str  # a key that may use openai/* only

    def client(self, key: str | None = None) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            api_key=key or self.key, base_url="http://testserver", http_client=self.http, max_retries=0
        )

    def balance(self) -> tuple[int, int]:
        account = self.ledger.get_account("acme")
        return account.balance, account.available


@pytest.fixture
def setup() -> Iterator[Setup]:
    claude = FakeCountingAnthropicUpstream(api_key=ANTHROPIC_SECRET).start()
    gpt = FakeOpenAIUpstream(api_key=OPENAI_SECRET).start()
    ledger = in_memory_ledger(clock=FakeClock())
    ledger.initialise()
    registry = ProviderRegistry(ledger)
    registry.register_provider("anthropic", "anthropic", base_url=claude.base_url, region=None, secret=ANTHROPIC_SECRET)
    registry.register_provider("openai", "openai", base_url=gpt.base_url, region=None, secret=OPENAI_SECRET)
    prices = Prices(ledger)
    prices.set_price(CLAUDE, price_from_credits(input="3", output="15"))
    prices.set_price(GPT, price_from_credits(input="2", output="8"))
    prices.set_alias("smart", [CLAUDE, GPT])
    prices.set_alias("cheap", [GPT, CLAUDE])
    Accounts(ledger).create_account("acme", starter_credits=STARTER)
    keys = ApiKeys(ledger)
    issued = keys.issue_api_key("acme")
    limited = keys.issue_api_key("acme", models=["openai/*"]).plaintext
    app = in_process_app(build_services(Settings(), ledger=ledger))
    with TestClient(app) as http:
        yield Setup(http, ledger, claude, gpt, issued.plaintext, str(issued.key_id), limited)
    ledger.close()
    claude.stop()
    gpt.stop()


def test_an_anthropic_model_is_counted_by_the_provider_with_the_operators_credential(setup: Setup) -> None:
    raw = setup.client().messages.with_raw_response.count_tokens(
        model=CLAUDE, system="Be brief.", messages=MESSAGES, tools=TOOLS
    )
    counted = raw.parse()
    [sent] = setup.anthropic_upstream.counts()
    assert sent == {"model": "claude-sonnet-4-6", "messages": MESSAGES, "system": "Be brief.", "tools": TOOLS}
    assert counted.input_tokens == count_input_tokens(sent) > 0
    assert raw.headers["x-tallyhub-usage-source"] == "provider"
    assert "estimated" not in raw.http_response.json()
    request = setup.anthropic_upstream.requests[-1]
    assert request.headers["x-api-key"] == ANTHROPIC_SECRET and request.headers["anthropic-version"]


def test_fields_counting_does_not_take_are_not_sent_to_the_provider(setup: Setup) -> None:
    response = setup.http.post(
        "/v1/messages/count_tokens",
        headers={"x-api-key": setup.key},
        json={"model": "smart", "messages": MESSAGES, "max_tokens": 50, "stream": True, "temperature": 0.5},
    )
    assert response.status_code == 200, response.text
    assert setup.anthropic_upstream.counts() == [{"model": "claude-sonnet-4-6", "messages": MESSAGES}]
    assert response.json() == {"input_tokens": count_input_tokens({"messages": MESSAGES})}


def test_another_providers_model_is_estimated_by_the_gateway_and_marked(setup: Setup) -> None:
    for model in (GPT, "cheap"):
        raw = setup.client().messages.with_raw_response.count_tokens(model=model, messages=MESSAGES)
        body = {"model": model, "messages": MESSAGES}
        assert raw.parse().input_tokens == tokens_for_chars(shape_of(body, None).prompt_bytes) > 0
        assert raw.http_response.json()["estimated"] is True
        assert raw.headers["x-tallyhub-usage-source"] == "estimated"
    assert setup.openai_upstream.requests == [] and setup.anthropic_upstream.requests == []


def test_counting_is_never_held_charged_or_recorded(setup: Setup) -> None:
    before = setup.balance()
    for model in (CLAUDE, GPT):
        raw = setup.client().messages.with_raw_response.count_tokens(model=model, messages=MESSAGES)
        assert raw.parse().input_tokens > 0
        assert "x-tallyhub-charge-nanocredits" not in raw.headers
        with pytest.raises(Exception, match="no request"):
            setup.ledger.get_request_record(raw.headers["x-request-id"])
    assert setup.balance() == before == (STARTER, STARTER)


def test_a_bad_key_a_forbidden_model_and_an_unknown_one_are_anthropic_errors(setup: Setup) -> None:
    with pytest.raises(anthropic.AuthenticationError) as bad_key:
        setup.client("thk_wrong").messages.count_tokens(model=CLAUDE, messages=MESSAGES)
    with pytest.raises(anthropic.PermissionDeniedError) as forbidden:
        setup.client(setup.limited).messages.count_tokens(model=CLAUDE, messages=MESSAGES)
    with pytest.raises(anthropic.NotFoundError) as unknown:
        setup.client().messages.count_tokens(model="anthropic/nope", messages=MESSAGES)
    assert bad_key.value.body["type"] == "error" and bad_key.value.body["error"]["type"] == "authentication_error"
    assert forbidden.value.body["error"]["type"] == "permission_error"
    assert unknown.value.body["error"]["type"] == "not_found_error"
    assert setup.anthropic_upstream.requests == []
    missing = setup.http.post("/v1/messages/count_tokens", json={"model": CLAUDE, "messages": MESSAGES})
    assert missing.status_code == 401 and missing.json()["type"] == "error"


def test_a_bad_body_is_refused_before_the_provider_sees_it(setup: Setup) -> None:
    with pytest.raises(anthropic.BadRequestError) as refused:
        setup.client().messages.count_tokens(model=CLAUDE, messages=[])
    assert refused.value.body["error"]["type"] == "invalid_request_error"
    assert setup.anthropic_upstream.requests == []


def test_the_providers_failure_is_answered_in_anthropics_shape(setup: Setup) -> None:
    setup.anthropic_upstream.script(AnthropicScript.error(400, "messages: roles must alternate"))
    with pytest.raises(anthropic.BadRequestError) as refused:
        setup.client().messages.count_tokens(model=CLAUDE, messages=MESSAGES)
    assert refused.value.body["type"] == "error" and "alternate" in refused.value.body["error"]["message"]


def test_a_count_is_one_request_of_the_keys_requests_per_minute(setup: Setup) -> None:
    ApiKeys(setup.ledger).set_key_limits(setup.key_id, rpm=2)
    client = setup.client()
    first = client.messages.with_raw_response.count_tokens(model=GPT, messages=MESSAGES)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    client.messages.count_tokens(model=CLAUDE, messages=MESSAGES)
    with pytest.raises(anthropic.RateLimitError) as limited:
        client.messages.count_tokens(model=CLAUDE, messages=MESSAGES)
    assert limited.value.body["error"]["type"] == "rate_limit_error"
    assert int(limited.value.response.headers["retry-after"]) >= 1
    assert len(setup.anthropic_upstream.counts()) == 1  # the refused count never reached the provider
