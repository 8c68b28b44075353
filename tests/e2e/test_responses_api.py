"""``POST /v1/responses`` driven by the official ``openai`` SDK (``responses.create`` plain
and streamed, ``responses.stream``) through ``tallyhub serve``, against the OpenAI,
Anthropic and Gemini fakes, each speaking its own wire format.

For each provider: the answer is a Response object; the charge is exactly the provider's
token count at the model's rates, in ``usage.cost_nanocredits``, in the charge header and
in the balance; the request lands in the ledger like a chat request; a function tool round
trip reaches the provider in its own format. Built-in tools and other untranslatable
requests are a 400 naming the parameter, and cost nothing.
"""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from domain.estimation import tokens_for_chars
from tests.e2e.providers_setup import (
    ACCOUNT,
    INPUT_RATE,
    OUTPUT_RATE,
    PNG_BASE64,
    PNG_DATA_URL,
    Upstream,
    client_for,
    configure,
    start_upstreams,
)
from tests.fakes.openai_wire import reply_tokens
from tests.support.gateway import Gateway

PROVIDERS = ("openai", "anthropic", "gemini")
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
TOOL_RESULT = {"temp_c": 21, "sky": "clear"}


@dataclass
class Served:
    gateway: Gateway
    upstreams: dict[str, Upstream]
    client: openai.OpenAI
    api_key: str

    def balance(self) -> int:
        balance: int = self.gateway.balance(ACCOUNT)["balance"]
        return balance

    def record(self, request_id: str) -> dict[str, Any]:
        return self.gateway.admin_json("GET", f"/requests/{request_id}")


@contextmanager
def serving(data_dir: Path, **settings: str) -> Iterator[Served]:
    """A gateway (with ``settings``) in front of the OpenAI, Anthropic and Gemini fakes."""
    started = start_upstreams()
    for unused in (u for u in started if u.name not in PROVIDERS):
        unused.fake.stop()
    upstreams = [u for u in started if u.name in PROVIDERS]
    gateway = Gateway.initialised(data_dir, **settings)
    try:
        api_key = configure(gateway, upstreams)
        gateway.start()
        with client_for(gateway, api_key) as client:
            yield Served(gateway, {u.name: u for u in upstreams}, client, api_key)
    finally:
        gateway.stop()
        for upstream in upstreams:
            upstream.fake.stop()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(tmp_path_factory.mktemp("responses")) as served:
        yield served


@pytest.fixture(params=PROVIDERS)
def upstream(request: pytest.FixtureRequest, served: Served) -> Upstream:
    upstream = served.upstreams[request.param]
    upstream.fake.reset()
    return upstream


def counted(upstream: Upstream) -> tuple[int, int]:
    """(input, output) tokens by the fake's documented rules for its last request and reply."""
    return upstream.prompt_tokens(upstream.last_body), len(reply_tokens(upstream.reply_text))


def charge_for(input_tokens: int, output_tokens: int) -> int:
    return input_tokens * INPUT_RATE + output_tokens * OUTPUT_RATE


def test_a_plain_response_is_answered_in_responses_terms_and_charged_exactly(
    served: Served, upstream: Upstream
) -> None:
    before = served.balance()
    raw = served.client.responses.with_raw_response.create(
        model=upstream.gateway_model, instructions="Be brief.", input="Say hello to the ledger."
    )
    response = raw.parse()
    assert response.id.startswith("resp_") and response.object == "response"
    assert (response.status, response.model) == ("completed", upstream.gateway_model)
    assert response.output_text == upstream.reply_text
    [message] = response.output
    assert message.type == "message" and message.role == "assistant"
    usage = response.usage
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens) == counted(upstream)
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens == 0 and usage.output_tokens_details.reasoning_tokens == 0
    charge = charge_for(usage.input_tokens, usage.output_tokens)
    extra = usage.model_extra or {}
    assert extra["cost_nanocredits"] == charge > 0 and extra["cost_decimal"] == f"{charge / 10**9:.9f}"
    assert extra["usage_source"] == "provider"
    assert int(raw.headers["x-tallyhub-charge-nanocredits"]) == charge
    assert before - served.balance() == charge
    record = served.record(raw.headers["x-request-id"])
    assert (record["provider"], record["status"], record["charge"]) == (upstream.name, 200, charge)
    assert record["endpoint"] == "responses" and response.id == "resp_" + raw.headers["x-request-id"].replace("-", "")
    assert not upstream.streamed(upstream.fake.requests[-1])


def test_a_streamed_response_has_the_responses_events_and_the_exact_charge_at_completion(
    served: Served, upstream: Upstream
) -> None:
    before = served.balance()
    raw = served.client.responses.with_raw_response.create(
        model=upstream.gateway_model, input=[{"role": "user", "content": "Stream hello."}], stream=True
    )
    events = list(raw.parse())
    types = [event.type for event in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert "".join(deltas) == upstream.reply_text
    assert len(deltas) == len(reply_tokens(upstream.reply_text))  # streamed as it came, not buffered
    completed = events[-1].response
    assert completed.output_text == upstream.reply_text and completed.status == "completed"
    assert upstream.streamed(upstream.fake.requests[-1])
    usage = completed.usage
    assert usage is not None and (usage.input_tokens, usage.output_tokens) == counted(upstream)
    charge = charge_for(usage.input_tokens, usage.output_tokens)
    assert (usage.model_extra or {})["cost_nanocredits"] == charge > 0
    assert before - served.balance() == charge
    assert served.record(raw.headers["x-request-id"])["charge"] == charge


def test_the_stream_helper_accumulates_the_final_response(served: Served, upstream: Upstream) -> None:
    before = served.balance()
    with served.client.responses.stream(model=upstream.gateway_model, input="Stream hello.") as stream:
        texts = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(texts) == final.output_text == upstream.reply_text
    assert final.usage is not None
    charge = charge_for(final.usage.input_tokens, final.usage.output_tokens)
    assert (final.usage.model_extra or {})["cost_nanocredits"] == charge == before - served.balance()


def test_a_function_tool_round_trip_reaches_the_provider_in_its_own_format(served: Served, upstream: Upstream) -> None:
    conversation: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = served.client.responses.create(model=upstream.gateway_model, input=conversation, tools=[WEATHER_TOOL])
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.call_id and call.id and call.id.startswith("fc_")
    assert set(json.loads(call.arguments)) == {"city"}
    conversation += first.output
    conversation.append({"type": "function_call_output", "call_id": call.call_id, "output": json.dumps(TOOL_RESULT)})
    before = served.balance()
    raw = served.client.responses.with_raw_response.create(
        model=upstream.gateway_model, input=conversation, tools=[WEATHER_TOOL]
    )
    answer = raw.parse()
    assert answer.output_text and [item.type for item in answer.output] == ["message"]
    named_by = call.name if upstream.kind == "gemini" else call.call_id
    assert tool_result_received(upstream) == (named_by, TOOL_RESULT)
    assert int(raw.headers["x-tallyhub-charge-nanocredits"]) == before - served.balance() > 0


def test_a_streamed_function_call_arrives_as_argument_deltas(served: Served, upstream: Upstream) -> None:
    with served.client.responses.stream(
        model=upstream.gateway_model, input="Weather in Paris?", tools=[WEATHER_TOOL]
    ) as stream:
        deltas = [event.delta for event in stream if event.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    [call] = [item for item in final.output if item.type == "function_call"]  # Claude says something first
    assert call.name == "get_weather" and call.call_id
    assert "".join(deltas) == call.arguments and set(json.loads(call.arguments)) == {"city"}
    assert final.usage is not None and (final.usage.model_extra or {})["cost_nanocredits"] > 0


def test_an_image_input_reaches_the_provider_in_its_own_format(served: Served, upstream: Upstream) -> None:
    response = served.client.responses.create(
        model=upstream.gateway_model,
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is in this picture?"},
                    {"type": "input_image", "image_url": PNG_DATA_URL, "detail": "auto"},
                ],
            }
        ],
    )
    assert response.output_text == upstream.reply_text
    assert image_received(upstream) == PNG_BASE64


def test_max_output_tokens_cuts_the_answer_and_says_incomplete(served: Served) -> None:
    upstream = served.upstreams["openai"]
    response = served.client.responses.create(model=upstream.gateway_model, input="Hello", max_output_tokens=2)
    assert response.status == "incomplete" and response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "".join(reply_tokens(upstream.reply_text)[:2])
    assert upstream.last_body["max_completion_tokens"] == 2
    with served.client.responses.stream(model=upstream.gateway_model, input="Hello", max_output_tokens=2) as stream:
        last = list(stream)[-1]
    assert last.type == "response.incomplete" and last.response.usage is not None


def test_sampling_format_reasoning_and_attribution_reach_the_chat_body(served: Served) -> None:
    upstream = served.upstreams["openai"]
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    raw = served.client.responses.with_raw_response.create(
        model=upstream.gateway_model,
        input="Hello",
        temperature=0.2,
        top_p=0.9,
        text={"format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}},
        reasoning={"effort": "low"},
        parallel_tool_calls=False,
        tools=[WEATHER_TOOL],
        tool_choice="none",
        user="end-user-7",
        metadata={"team": "ledger"},
        extra_headers={"x-tallyhub-tags": "docs,e2e"},
    )
    sent = upstream.last_body
    assert (sent["temperature"], sent["top_p"], sent["reasoning_effort"]) == (0.2, 0.9, "low")
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": schema, "strict": True},
    }
    assert sent["parallel_tool_calls"] is False and sent["tool_choice"] == "none" and sent["user"] == "end-user-7"
    assert "metadata" not in sent and "store" not in sent
    assert raw.parse().output_text == upstream.reply_text
    record = served.record(raw.headers["x-request-id"])
    assert record["attribution"] == {"user": "end-user-7", "metadata": {"team": "ledger"}, "tags": ["docs", "e2e"]}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools.0.type"),
        ({"tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]}, "tools.0.type"),
        ({"background": True}, "background"),
        ({"conversation": "conv_123"}, "conversation"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input.0.type"),
        ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
        ({"previous_response_id": "resp_unknown"}, "previous_response_id"),
    ],
)
def test_what_cannot_be_translated_is_a_400_naming_the_param_and_costs_nothing(
    served: Served, fields: dict[str, Any], param: str
) -> None:
    upstream = served.upstreams["openai"]
    upstream.fake.reset()
    before = served.balance()
    body = {"model": upstream.gateway_model, "input": "Hello", **fields}
    with pytest.raises(openai.BadRequestError) as refused:
        served.client.responses.create(**body)
    error = refused.value.body
    assert isinstance(error, dict) and error["param"] == param and error["type"] == "invalid_request_error"
    assert upstream.fake.requests == [] and served.balance() == before


def test_with_storage_off_a_stored_response_is_answered_and_says_it_was_not_stored(served: Served) -> None:
    upstream = served.upstreams["openai"]
    raw = served.client.responses.with_raw_response.create(model=upstream.gateway_model, input="Hello", store=True)
    assert raw.parse().store is False and raw.headers["x-tallyhub-responses-store"] == "off"
    unasked = served.client.responses.with_raw_response.create(model=upstream.gateway_model, input="Hello", store=False)
    assert unasked.parse().store is False and "x-tallyhub-responses-store" not in unasked.headers


def test_a_stream_the_provider_breaks_ends_with_response_failed_and_charges_what_was_delivered(
    served: Served,
) -> None:
    upstream = served.upstreams["openai"]
    upstream.fake.reset()
    upstream.script(upstream.broken_stream())
    before = served.balance()
    raw = served.client.responses.with_raw_response.create(model=upstream.gateway_model, input="Hello", stream=True)
    events = list(raw.parse())
    assert events[-1].type == "response.failed" and events[-1].response.status == "failed"
    delivered = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert delivered == upstream.delivered_before_break
    charge = tokens_for_chars(len(delivered)) * OUTPUT_RATE
    record = served.record(raw.headers["x-request-id"])
    assert (record["status"], record["charge"]) == (502, charge)
    assert before - served.balance() == charge


def test_errors_are_openais_shape(served: Served) -> None:
    url = served.gateway.url + "/v1/responses"
    bad_key = httpx.post(url, json={"model": "openai/gpt-4o-mini", "input": "x"}, headers={"authorization": "Bearer x"})
    assert bad_key.status_code == 401 and set(bad_key.json()["error"]) == {"message", "type", "param", "code"}
    with pytest.raises(openai.NotFoundError) as missing:
        served.client.responses.create(model="openai/nope", input="x")
    assert isinstance(missing.value.body, dict) and missing.value.body["code"] == "model_not_found"


# -- what the provider received, read from its own wire format ---------------------


def tool_result_received(upstream: Upstream) -> tuple[str | None, Any]:
    body = upstream.last_body
    if upstream.kind == "openai":
        message = body["messages"][-1]
        assert message["role"] == "tool"
        return message["tool_call_id"], json.loads(message["content"])
    if upstream.kind == "anthropic":
        turn = body["messages"][-1]
        [block] = turn["content"]
        assert (turn["role"], block["type"]) == ("user", "tool_result")
        content = block["content"]
        text = content if isinstance(content, str) else "".join(b["text"] for b in content)
        return block["tool_use_id"], json.loads(text)
    assert upstream.kind == "gemini"
    turn = body["contents"][-1]
    [part] = turn["parts"]
    return part["functionResponse"]["name"], part["functionResponse"]["response"]


def image_received(upstream: Upstream) -> str:
    """The base64 data of the one image in the last user turn."""
    body = upstream.last_body
    if upstream.kind == "openai":
        [url] = [p["image_url"]["url"] for p in body["messages"][-1]["content"] if p["type"] == "image_url"]
        return str(url.partition(",")[2])
    if upstream.kind == "anthropic":
        [block] = [b for b in body["messages"][-1]["content"] if b["type"] == "image"]
        return str(block["source"]["data"])
    [part] = [p for p in body["contents"][-1]["parts"] if "inlineData" in p]
    return str(part["inlineData"]["data"])
