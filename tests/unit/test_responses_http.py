"""``POST /v1/responses`` over the in-process app with storage on, through the official
``openai`` SDK against a fake OpenAI upstream: a streamed response is kept before its
``response.completed`` and can be read and continued; ``store: false`` keeps nothing; a
store that fails does not fail the answer the caller paid for (it says ``store: false``)."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import openai
import pytest
from fastapi.testclient import TestClient

from adapters.bootstrap import build_services, in_memory_ledger
from adapters.http.app import create_app
from adapters.services import Services
from adapters.settings import Settings
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from domain.money import NANOCREDITS_PER_CREDIT
from tests.fakes.clock import FakeClock
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.fakes.openai_wire import count_prompt_tokens, reply_tokens

MODEL = "openai/gpt-4o-mini"
UPSTREAM_KEY = "sk-upstream-responses-http-01"
INPUT_RATE, OUTPUT_RATE = 2_000, 8_000  # nanocredits per token: 2 and 8 credits per 1M


@dataclass
class Gateway:
    services: Services
    client: openai.OpenAI
    upstream: FakeOpenAIUpstream
    account_id: UUID

    def balance(self) -> int:
        return self.services.ledger.get_account(self.account_id).balance


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    upstream = FakeOpenAIUpstream(api_key=UPSTREAM_KEY).start()
    ledger = in_memory_ledger(clock=FakeClock())
    ledger.initialise()
    ProviderRegistry(ledger).register_provider(
        "openai", "openai", base_url=upstream.base_url, region=None, secret=UPSTREAM_KEY
    )
    Prices(ledger).set_price(MODEL, price_from_credits(input="2", output="8"))
    accounts = Accounts(ledger)
    account = accounts.create_account("acme")
    accounts.grant_credits("acme", 100 * NANOCREDITS_PER_CREDIT)
    key = ApiKeys(ledger).issue_api_key("acme").plaintext
    services = build_services(Settings(data_dir=tmp_path, responses_store=True), ledger=ledger)
    try:
        with TestClient(create_app(services, run_projections=False)) as http:
            client = openai.OpenAI(api_key=key, base_url="http://testserver/v1", http_client=http, max_retries=0)
            yield Gateway(services, client, upstream, account.id)
    finally:
        upstream.stop()


def charge_of(usage: Any) -> int:
    charge: int = (usage.model_extra or {})["cost_nanocredits"]
    return charge


def test_a_streamed_response_is_kept_before_it_completes_and_can_be_read_and_continued(gateway: Gateway) -> None:
    before = gateway.balance()
    with gateway.client.responses.stream(model=MODEL, input="Remember the number 7.") as stream:
        final = stream.get_final_response()
    assert final.store is True and final.usage is not None
    sent = gateway.upstream.requests[-1].json["messages"]
    charge = count_prompt_tokens(sent) * INPUT_RATE + len(reply_tokens(final.output_text)) * OUTPUT_RATE
    assert charge_of(final.usage) == charge == before - gateway.balance()

    kept = gateway.client.responses.retrieve(final.id)
    assert kept.output_text == final.output_text and kept.usage is not None and charge_of(kept.usage) == charge

    follow = gateway.client.responses.create(model=MODEL, input="Which number?", previous_response_id=final.id)
    assert follow.previous_response_id == final.id and follow.store is True
    assert gateway.upstream.requests[-1].json["messages"] == [
        {"role": "user", "content": "Remember the number 7."},
        {"role": "assistant", "content": final.output_text},
        {"role": "user", "content": "Which number?"},
    ]


def test_store_false_keeps_nothing(gateway: Gateway) -> None:
    response = gateway.client.responses.create(model=MODEL, input="Hello", store=False)
    assert response.store is False
    with pytest.raises(openai.NotFoundError):
        gateway.client.responses.retrieve(response.id)
    with pytest.raises(openai.BadRequestError) as refused:
        gateway.client.responses.create(model=MODEL, input="Again", previous_response_id=response.id)
    assert isinstance(refused.value.body, dict) and refused.value.body["param"] == "previous_response_id"


class _BrokenStore:
    enabled = True

    async def keep(self, account_id: UUID, response: dict[str, Any], items: list[dict[str, Any]]) -> None:
        raise OSError("disk full")


def test_a_store_that_fails_does_not_fail_the_paid_answer_which_says_it_was_not_kept(gateway: Gateway) -> None:
    gateway.services.responses = _BrokenStore()  # type: ignore[assignment]
    before = gateway.balance()
    response = gateway.client.responses.create(model=MODEL, input="Hello")
    assert response.store is False and response.output_text and response.usage is not None
    with gateway.client.responses.stream(model=MODEL, input="Hello") as stream:
        final = stream.get_final_response()
    assert final.store is False and final.usage is not None
    assert before - gateway.balance() == charge_of(response.usage) + charge_of(final.usage)
