"""``previous_response_id`` with storage on (``TALLYHUB_RESPONSES_STORE=on``), through the
official ``openai`` SDK against the OpenAI, Anthropic and Gemini fakes: the continued
request reaches each provider with the earlier turns in its own format, in order, and is
charged exactly the provider's count for that whole conversation; a function call answered
by ``function_call_output`` alone (the call itself only in the stored response) reaches the
provider as the tool result it is."""

import json
from collections.abc import Iterator

import openai
import pytest

from tests.e2e.providers_setup import ACCOUNT, Upstream, client_for
from tests.e2e.test_responses_api import (
    PROVIDERS,
    TOOL_RESULT,
    WEATHER_TOOL,
    Served,
    charge_for,
    counted,
    serving,
    tool_result_received,
)
from tests.support.gateway import cli


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(tmp_path_factory.mktemp("continued"), TALLYHUB_RESPONSES_STORE="on") as served:
        yield served


@pytest.fixture(params=PROVIDERS)
def upstream(request: pytest.FixtureRequest, stored: Served) -> Upstream:
    upstream = stored.upstreams[request.param]
    upstream.fake.reset()
    return upstream


def test_a_continued_response_carries_the_earlier_turns_and_is_charged_exactly(
    stored: Served, upstream: Upstream
) -> None:
    first = stored.client.responses.create(model=upstream.gateway_model, input="My name is Ada Lovelace.")
    assert first.store is True
    before = stored.gateway.balance(ACCOUNT)["balance"]
    raw = stored.client.responses.with_raw_response.create(
        model=upstream.gateway_model, previous_response_id=first.id, input="What is my name?"
    )
    second = raw.parse()
    sent = json.dumps(upstream.last_body)
    said, answered, asked = (sent.find(text) for text in ("Ada Lovelace", upstream.reply_text, "What is my name?"))
    assert 0 <= said < answered < asked, sent  # the earlier turns first, in order, then the new input
    usage = second.usage
    assert usage is not None and (usage.input_tokens, usage.output_tokens) == counted(upstream)
    charge = charge_for(usage.input_tokens, usage.output_tokens)
    assert (usage.model_extra or {})["cost_nanocredits"] == charge > 0
    assert (
        int(raw.headers["x-tallyhub-charge-nanocredits"])
        == charge
        == before - stored.gateway.balance(ACCOUNT)["balance"]
    )
    assert stored.client.responses.retrieve(second.id).output_text == second.output_text


def test_a_function_call_is_answered_by_its_output_alone_after_a_stored_response(
    stored: Served, upstream: Upstream
) -> None:
    first = stored.client.responses.create(
        model=upstream.gateway_model, input="What is the weather in Paris?", tools=[WEATHER_TOOL]
    )
    [call] = [item for item in first.output if item.type == "function_call"]
    before = stored.gateway.balance(ACCOUNT)["balance"]
    raw = stored.client.responses.with_raw_response.create(
        model=upstream.gateway_model,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": json.dumps(TOOL_RESULT)}],
        tools=[WEATHER_TOOL],
    )
    assert raw.parse().output_text
    named_by = call.name if upstream.kind == "gemini" else call.call_id
    assert tool_result_received(upstream) == (named_by, TOOL_RESULT)
    assert int(raw.headers["x-tallyhub-charge-nanocredits"]) == before - stored.gateway.balance(ACCOUNT)["balance"] > 0


def test_another_keys_account_cannot_continue_it(stored: Served, upstream: Upstream) -> None:
    first = stored.client.responses.create(model=upstream.gateway_model, input="A secret: 42.")
    other_account = f"other-{upstream.name}"
    cli(stored.gateway.env, "accounts", "create", other_account, "--starter-credits", "5")
    other_key = cli(stored.gateway.env, "keys", "issue", other_account)["key"]
    with client_for(stored.gateway, other_key) as other:
        with pytest.raises(openai.BadRequestError) as refused:
            other.responses.create(model=upstream.gateway_model, previous_response_id=first.id, input="And?")
    assert refused.value.code == "previous_response_not_found"
