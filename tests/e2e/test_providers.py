"""Every provider kind, driven through ``tallyhub serve`` by the official ``openai`` SDK,
against a fake upstream that speaks that provider's own wire format: OpenAI, the
OpenAI-compatible family (as ``deepseek``), Anthropic, Gemini, Bedrock (SigV4) and Ollama.

For each: the answer comes back in OpenAI's shape, plain and streamed; the charge is
exactly the provider's token count at the model's rates and moves the balance by exactly
that; tool calls and images reach the provider in its own format and come back; a
provider failure is an honest status that costs nothing; a stream the provider breaks
ends in an error event and is charged only for what was delivered.

One gateway serves the whole module. A 429 or 5xx puts the provider's only credential
in a cooldown, so those tests come last and any later use of that provider waits it out.
"""

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

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

PROVIDERS = ("openai", "deepseek", "anthropic", "gemini", "bedrock", "ollama")
HELLO = [{"role": "user", "content": "Say hello to the ledger."}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TOOL_RESULT = {"temp_c": 21, "sky": "clear"}


@dataclass
class Served:
    gateway: Gateway
    upstreams: dict[str, Upstream]
    client: openai.OpenAI
    cooling_until: dict[str, float] = field(default_factory=dict)

    def balance(self) -> dict[str, Any]:
        return self.gateway.balance(ACCOUNT)

    def receipt(self, request_id: str) -> dict[str, Any]:
        return self.gateway.admin_json("GET", f"/requests/{request_id}")

    def cooled_down(self, name: str, seconds: float) -> None:
        """The gateway now skips this provider's credential for ``seconds``."""
        self.cooling_until[name] = time.monotonic() + seconds

    def usable(self, name: str) -> Upstream:
        """The provider, its fake reset, once any cooldown an earlier test caused is over."""
        wait = self.cooling_until.pop(name, 0.0) - time.monotonic()
        if wait > 0:
            time.sleep(wait + 0.05)
        upstream = self.upstreams[name]
        upstream.fake.reset()
        return upstream


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    upstreams = start_upstreams()
    gateway = Gateway.initialised(tmp_path_factory.mktemp("providers"))
    try:
        api_key = configure(gateway, upstreams)
        gateway.start()
        with client_for(gateway, api_key) as client:
            yield Served(gateway, {u.name: u for u in upstreams}, client)
    finally:
        gateway.stop()
        for upstream in upstreams:
            upstream.fake.stop()


@pytest.fixture(params=PROVIDERS)
def upstream(request: pytest.FixtureRequest, served: Served) -> Upstream:
    return served.usable(request.param)


def charge_for(usage: Any) -> int:
    return usage.prompt_tokens * INPUT_RATE + usage.completion_tokens * OUTPUT_RATE


def counted_by_provider(upstream: Upstream) -> tuple[int, int]:
    """(prompt, completion) tokens by the fake's documented rules for its last request and reply."""
    return upstream.prompt_tokens(upstream.last_body), len(reply_tokens(upstream.reply_text))


# -- what the provider received, read from its own wire format ---------------------


def tool_result_received(upstream: Upstream) -> tuple[str | None, Any]:
    """(the call id, or the function name where the format has no ids; the result) of the last turn."""
    body = upstream.last_body
    if upstream.kind in ("openai", "openai-compatible"):
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
    if upstream.kind == "gemini":
        turn = body["contents"][-1]
        [part] = turn["parts"]
        assert turn["role"] == "user"
        return part["functionResponse"]["name"], part["functionResponse"]["response"]
    if upstream.kind == "bedrock":
        turn = body["messages"][-1]
        [block] = turn["content"]
        [content] = block["toolResult"]["content"]
        assert turn["role"] == "user"
        return block["toolResult"]["toolUseId"], content["json"] if "json" in content else json.loads(content["text"])
    assert upstream.kind == "ollama"
    message = body["messages"][-1]
    assert message["role"] == "tool"
    return message.get("tool_name"), json.loads(message["content"])


def images_received(upstream: Upstream) -> list[tuple[str | None, str]]:
    """(media type, base64 data) of each image in the last user turn; Ollama's format has no media type."""
    body = upstream.last_body
    if upstream.kind in ("openai", "openai-compatible"):
        parts = body["messages"][-1]["content"]
        urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
        return [(url[len("data:") : url.index(";")], url.partition(",")[2]) for url in urls]
    if upstream.kind == "anthropic":
        blocks = body["messages"][-1]["content"]
        return [(b["source"]["media_type"], b["source"]["data"]) for b in blocks if b["type"] == "image"]
    if upstream.kind == "gemini":
        parts = body["contents"][-1]["parts"]
        return [(p["inlineData"]["mimeType"], p["inlineData"]["data"]) for p in parts if "inlineData" in p]
    if upstream.kind == "bedrock":
        blocks = body["messages"][-1]["content"]
        return [(f"image/{b['image']['format']}", b["image"]["source"]["bytes"]) for b in blocks if "image" in b]
    assert upstream.kind == "ollama"
    return [(None, data) for data in body["messages"][-1].get("images") or ()]


# -- 1. plain completions ----------------------------------------------------------


def test_a_plain_completion_is_charged_exactly_the_providers_count_at_the_models_rates(
    served: Served, upstream: Upstream
) -> None:
    before = served.balance()
    raw = served.client.chat.completions.with_raw_response.create(model=upstream.gateway_model, messages=HELLO)
    completion = raw.parse()
    assert completion.choices[0].message.content == upstream.reply_text
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == counted_by_provider(upstream)
    charge = charge_for(usage)
    assert int(raw.headers["x-tallyhub-charge-nanocredits"]) == charge > 0
    after = served.balance()
    assert before["balance"] - after["balance"] == charge
    assert after["held"] == 0
    receipt = served.receipt(raw.headers["x-request-id"])
    assert (receipt["provider"], receipt["status"], receipt["charge"]) == (upstream.name, 200, charge)
    assert receipt["usage"]["source"] == "provider"
    assert str(receipt["price_book_version"]) == raw.headers["x-tallyhub-price-book-version"]
    assert len(upstream.fake.requests) == 1 and not upstream.streamed(upstream.fake.requests[0])


# -- 2. streams --------------------------------------------------------------------


def test_a_stream_relays_the_text_and_ends_with_a_usage_chunk_carrying_the_exact_charge(
    served: Served, upstream: Upstream
) -> None:
    before = served.balance()
    raw = served.client.chat.completions.with_raw_response.create(
        model=upstream.gateway_model, messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(raw.parse())
    *deltas, final = chunks
    pieces = [c.choices[0].delta.content for c in deltas if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == upstream.reply_text
    assert len(pieces) == len(reply_tokens(upstream.reply_text))  # streamed as it came, not buffered
    assert all(c.choices for c in deltas) and deltas[-1].choices[0].finish_reason == "stop"
    assert final.choices == [] and final.usage is not None
    assert upstream.streamed(upstream.fake.requests[-1])
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == counted_by_provider(upstream)
    charge = charge_for(final.usage)
    assert final.usage.model_extra["cost_nanocredits"] == charge > 0
    assert final.usage.model_extra["usage_source"] == "provider"
    assert before["balance"] - served.balance()["balance"] == charge
    assert served.receipt(raw.headers["x-request-id"])["charge"] == charge


# -- 3. tools ----------------------------------------------------------------------


def test_a_tool_call_round_trip_reaches_the_provider_in_its_own_format(served: Served, upstream: Upstream) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = served.client.chat.completions.create(model=upstream.gateway_model, messages=messages, tools=[WEATHER_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id and call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert isinstance(arguments, dict) and set(arguments) == {"city"}

    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(TOOL_RESULT)})
    before = served.balance()["balance"]
    raw = served.client.chat.completions.with_raw_response.create(
        model=upstream.gateway_model, messages=messages, tools=[WEATHER_TOOL]
    )
    answer = raw.parse().choices[0]
    assert answer.finish_reason == "stop" and answer.message.content and not answer.message.tool_calls
    named_by = call.function.name if upstream.kind in ("gemini", "ollama") else call.id
    assert tool_result_received(upstream) == (named_by, TOOL_RESULT)
    assert int(raw.headers["x-tallyhub-charge-nanocredits"]) == before - served.balance()["balance"] > 0


# -- 4. images ---------------------------------------------------------------------


def test_an_inline_image_reaches_the_provider_in_its_own_format(served: Served, upstream: Upstream) -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": PNG_DATA_URL}},
            ],
        }
    ]
    before = served.balance()["balance"]
    raw = served.client.chat.completions.with_raw_response.create(model=upstream.gateway_model, messages=messages)
    completion = raw.parse()
    assert completion.choices[0].message.content == upstream.reply_text
    media_type = None if upstream.kind == "ollama" else "image/png"
    assert images_received(upstream) == [(media_type, PNG_BASE64)]
    charge = charge_for(completion.usage)
    assert int(raw.headers["x-tallyhub-charge-nanocredits"]) == charge == before - served.balance()["balance"]


# -- 5. a stream the provider breaks -----------------------------------------------


def test_a_stream_the_provider_breaks_ends_in_an_error_and_charges_only_what_was_delivered(
    served: Served, upstream: Upstream
) -> None:
    upstream.script(upstream.broken_stream())
    before = served.balance()["balance"]
    raw = served.client.chat.completions.with_raw_response.create(
        model=upstream.gateway_model, messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in raw.parse():
            received.append(chunk)
    assert "ended the stream early" in caught.value.message
    assert not any(c.usage for c in received)
    assert not any(choice.finish_reason for c in received for choice in c.choices)
    delivered = "".join(choice.delta.content or "" for c in received for choice in c.choices)
    assert delivered == upstream.delivered_before_break != upstream.reply_text
    charge = tokens_for_chars(len(delivered)) * OUTPUT_RATE
    receipt = served.receipt(raw.headers["x-request-id"])
    assert (receipt["status"], receipt["usage"]["source"], receipt["charge"]) == (502, "estimated", charge)
    after = served.balance()
    assert before - after["balance"] == charge and after["held"] == 0


# -- requests a provider cannot express: refused before any call -------------------


def test_a_tool_schema_gemini_cannot_express_is_a_400_and_never_reaches_gemini(served: Served) -> None:
    gemini = served.usable("gemini")
    tool = {
        "type": "function",
        "function": {
            "name": "find_place",
            "parameters": {
                "type": "object",
                "properties": {"place": {"$ref": "#/$defs/place"}},
                "$defs": {"place": {"type": "object", "properties": {"name": {"type": "string"}}}},
            },
        },
    }
    before = served.balance()
    with pytest.raises(openai.BadRequestError) as caught:
        served.client.chat.completions.create(
            model=gemini.gateway_model,
            messages=HELLO,
            tools=[tool],
            tool_choice={"type": "function", "function": {"name": "find_place"}},
        )
    assert caught.value.status_code == 400 and "$ref" in caught.value.message
    assert gemini.fake.requests == []
    after = served.balance()
    assert (after["balance"], after["held"]) == (before["balance"], 0)


def test_n_2_to_anthropic_is_a_400_and_never_reaches_anthropic(served: Served) -> None:
    anthropic = served.usable("anthropic")
    before = served.balance()
    with pytest.raises(openai.BadRequestError) as caught:
        served.client.chat.completions.create(model=anthropic.gateway_model, messages=HELLO, n=2)
    assert caught.value.status_code == 400 and caught.value.param == "n"
    assert anthropic.fake.requests == []
    after = served.balance()
    assert (after["balance"], after["held"]) == (before["balance"], 0)


# -- 6. provider errors (last: each cools the provider's credential down) -------------


def test_a_provider_429_is_a_429_with_retry_after_and_costs_nothing(served: Served, upstream: Upstream) -> None:
    upstream.script(upstream.rate_limited())
    before = served.balance()
    with pytest.raises(openai.RateLimitError) as caught:
        served.client.chat.completions.create(model=upstream.gateway_model, messages=HELLO)
    retry_after = caught.value.response.headers.get("retry-after")
    served.cooled_down(upstream.name, float(retry_after or 0))
    assert caught.value.status_code == 429 and caught.value.code == "upstream_rate_limited"
    assert len(upstream.fake.requests) == 1  # the provider's own answer, not a gateway-side refusal
    if upstream.retry_after is not None:
        assert retry_after == upstream.retry_after  # the provider's wait, passed on
    else:
        assert retry_after is not None and int(retry_after) >= 1
    after = served.balance()
    assert (after["balance"], after["held"]) == (before["balance"], 0)
    receipt = served.receipt(caught.value.response.headers["x-request-id"])
    assert (receipt["status"], receipt["charge"]) == (429, 0)


def test_a_provider_500_is_a_502_and_costs_nothing(served: Served, upstream: Upstream) -> None:
    upstream.script(upstream.server_error())
    before = served.balance()
    with pytest.raises(openai.InternalServerError) as caught:
        served.client.chat.completions.create(model=upstream.gateway_model, messages=HELLO)
    assert caught.value.status_code == 502 and caught.value.code == "upstream_error"
    assert len(upstream.fake.requests) == 1
    after = served.balance()
    assert (after["balance"], after["held"]) == (before["balance"], 0)
    receipt = served.receipt(caught.value.response.headers["x-request-id"])
    assert (receipt["status"], receipt["charge"]) == (502, 0)
