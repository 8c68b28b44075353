"""The official ``anthropic`` SDK against ``/v1/messages``, reaching an OpenAI upstream:
plain and streaming, billed exactly like chat, errors in Anthropic's shape."""

from collections.abc import Iterator

import anthropic
import pytest

from tests.e2e.conftest import INPUT_RATE, MODEL, OUTPUT_RATE, configured_gateway
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.support.gateway import Gateway


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, FakeOpenAIUpstream, str]]:
    yield from configured_gateway(tmp_path_factory, "messages", "10")


def client(gateway: Gateway, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)


def test_a_plain_message_is_answered_and_charged_exactly(setup) -> None:
    gateway, upstream, key = setup
    before = gateway.balance("acme")["balance"]
    message = client(gateway, key).messages.create(
        model=MODEL, max_tokens=100, system="Be brief.", messages=[{"role": "user", "content": "Say hello"}]
    )
    assert message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason == "end_turn"
    charge = message.usage.input_tokens * INPUT_RATE + message.usage.output_tokens * OUTPUT_RATE
    assert before - gateway.balance("acme")["balance"] == charge
    sent = upstream.requests[-1].json
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."} and sent["max_tokens"] == 100


def test_a_streamed_message_carries_usage_and_is_charged_exactly(setup) -> None:
    gateway, _, key = setup
    before = gateway.balance("acme")["balance"]
    with client(gateway, key).messages.stream(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "Stream hello"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].text == text
    charge = final.usage.input_tokens * INPUT_RATE + final.usage.output_tokens * OUTPUT_RATE
    assert final.usage.output_tokens > 0 and before - gateway.balance("acme")["balance"] == charge


def test_tool_use_round_trip_through_an_openai_upstream(setup) -> None:
    gateway, upstream, key = setup
    tools = [
        {
            "name": "get_weather",
            "description": "Weather in a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }
    ]
    first = client(gateway, key).messages.create(
        model=MODEL, max_tokens=100, tools=tools, messages=[{"role": "user", "content": "Weather in Paris?"}]
    )
    call = next(block for block in first.content if block.type == "tool_use")
    assert first.stop_reason == "tool_use" and call.name == "get_weather" and isinstance(call.input, dict)
    second = client(gateway, key).messages.create(
        model=MODEL,
        max_tokens=100,
        tools=tools,
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [block.model_dump() for block in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18 °C"}]},
        ],
    )
    assert second.content[0].type == "text"
    assert upstream.requests[-1].json["messages"][-1] == {"role": "tool", "tool_call_id": call.id, "content": "18 °C"}


def test_errors_come_in_anthropics_shape(setup) -> None:
    gateway, _, key = setup
    with pytest.raises(anthropic.AuthenticationError):
        client(gateway, "thk_wrong").messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(anthropic.NotFoundError) as missing:
        client(gateway, key).messages.create(
            model="openai/nope", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert missing.value.body["type"] == "error" and missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError):
        client(gateway, key).messages.create(model=MODEL, max_tokens=10, messages=[])
