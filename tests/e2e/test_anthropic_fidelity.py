"""Issue 17's Anthropic fidelity, end to end: the real server, the official ``anthropic`` and
``openai`` SDKs, and the fake Anthropic upstream (which checks Anthropic's rules on
signatures, thinking-first tool loops and cache breakpoints).

- ``cache_control`` on a system block, a message block and a tool reaches Anthropic intact
  from both ingresses, and the cache reads and writes the upstream reports are on the
  receipt, charged exactly at the price book's cache rates;
- a two-turn extended-thinking tool conversation works through ``/v1/messages`` (plain and
  streamed) and ``/v1/chat/completions`` (``thinking_blocks``): the second request carries
  the first turn's thinking block with its real signature."""

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.fakes.anthropic_upstream import THINKING_TEXT, AnthropicScript, FakeAnthropicUpstream
from tests.support.gateway import Gateway, cli

UPSTREAM_KEY = "sk-ant-fidelity-0001"
MODEL = "anthropic/claude-sonnet-4-6"
# nanocredits per token: credits per 1M tokens × 1000
INPUT, CACHED, WRITE_5M, WRITE_1H, OUTPUT = 3_000, 300, 3_750, 6_000, 15_000
PRICES = {
    "models": {
        MODEL: {"input": "3", "cached_input": "0.3", "cache_write": "3.75", "cache_write_1h": "6", "output": "15"}
    }
}
EPHEMERAL = {"type": "ephemeral"}
HOUR = {"type": "ephemeral", "ttl": "1h"}
CACHE_USAGE = dict(
    input_tokens=10, cache_read_input_tokens=300, ephemeral_5m_input_tokens=40, ephemeral_1h_input_tokens=60
)
WEATHER = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
WEATHER_FUNCTION = {
    "type": "function",
    "function": {"name": WEATHER["name"], "description": WEATHER["description"], "parameters": WEATHER["input_schema"]},
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, FakeAnthropicUpstream, str]]:
    upstream = FakeAnthropicUpstream(api_key=UPSTREAM_KEY).start()
    data_dir = tmp_path_factory.mktemp("fidelity")
    gateway = Gateway.initialised(data_dir)
    env = gateway.env
    cli(
        env,
        "providers",
        "add",
        "anthropic",
        "--kind",
        "anthropic",
        "--base-url",
        upstream.base_url,
        "--api-key-stdin",
        stdin=UPSTREAM_KEY + "\n",
    )
    price_file = data_dir / "prices.json"
    price_file.write_text(json.dumps(PRICES))
    cli(env, "prices", "publish", str(price_file))
    cli(env, "accounts", "create", "acme")
    cli(env, "credits", "grant", "acme", "1000", "--reason", "e2e fidelity")
    key = cli(env, "keys", "issue", "acme", "--name", "fidelity")["key"]
    gateway.start()
    yield gateway, upstream, key
    gateway.stop()
    upstream.stop()


@pytest.fixture(autouse=True)
def _fresh(served) -> None:
    served[1].reset()


def claude(gateway: Gateway, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)


def chat(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)


def credits_text(nanocredits: int) -> str:
    return f"{nanocredits // 10**9}.{nanocredits % 10**9:09d}"


def cache_charge(output_tokens: int) -> int:
    return 10 * INPUT + 300 * CACHED + 40 * WRITE_5M + 60 * WRITE_1H + output_tokens * OUTPUT


# -- prompt caching ------------------------------------------------------------------


def test_messages_cache_marks_reach_anthropic_intact_and_cache_tokens_are_charged(served) -> None:
    gateway, upstream, key = served
    upstream.script(AnthropicScript.usage(**CACHE_USAGE))
    before = gateway.balance("acme")["balance"]
    raw = claude(gateway, key).messages.with_raw_response.create(
        model=MODEL,
        max_tokens=200,
        system=[{"type": "text", "text": "You are a weather bot. " * 50, "cache_control": HOUR}],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Long context " * 50, "cache_control": EPHEMERAL}]}
        ],
        tools=[{**WEATHER, "cache_control": EPHEMERAL}],
        tool_choice={"type": "none"},
    )
    message = raw.parse()

    sent = upstream.requests[-1].json
    assert sent["system"] == [{"type": "text", "text": "You are a weather bot. " * 50, "cache_control": HOUR}]
    assert sent["messages"][0]["content"] == [
        {"type": "text", "text": "Long context " * 50, "cache_control": EPHEMERAL}
    ]
    assert sent["tools"][0]["cache_control"] == EPHEMERAL
    assert message.usage.input_tokens == 10
    assert message.usage.cache_read_input_tokens == 300
    assert message.usage.cache_creation_input_tokens == 100
    assert message.usage.cache_creation is not None
    assert message.usage.cache_creation.ephemeral_5m_input_tokens == 40
    assert message.usage.cache_creation.ephemeral_1h_input_tokens == 60
    charge = cache_charge(message.usage.output_tokens)
    receipt = (message.model_extra or {})["tallyhub"]
    assert receipt["cost_nanocredits"] == charge
    assert receipt["cost_decimal"] == credits_text(charge)
    assert int(raw.headers["x-tallyhub-charge-nanocredits"]) == charge
    assert before - gateway.balance("acme")["balance"] == charge


def test_chat_content_part_message_and_tool_marks_reach_anthropic_and_are_charged(served) -> None:
    gateway, upstream, key = served
    upstream.script(AnthropicScript.usage(**CACHE_USAGE))
    raw = chat(gateway, key).chat.completions.with_raw_response.create(
        model=MODEL,
        max_tokens=200,
        messages=[
            {
                "role": "system",
                "content": [{"type": "text", "text": "You are a weather bot.", "cache_control": HOUR}],  # type: ignore[list-item]
            },
            {"role": "user", "content": "Earlier question", "cache_control": EPHEMERAL},  # type: ignore[misc]
            {"role": "assistant", "content": "Earlier answer"},
            {"role": "user", "content": "Now?"},
        ],
        tools=[{**WEATHER_FUNCTION, "cache_control": EPHEMERAL}],  # type: ignore[list-item]
        tool_choice="none",
    )
    completion = raw.parse()

    sent = upstream.requests[-1].json
    assert sent["system"] == [{"type": "text", "text": "You are a weather bot.", "cache_control": HOUR}]
    assert sent["messages"][0] == {
        "role": "user",
        "content": [{"type": "text", "text": "Earlier question", "cache_control": EPHEMERAL}],
    }
    assert sent["tools"][0]["cache_control"] == EPHEMERAL
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens == 410
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 300
    details = usage.prompt_tokens_details.model_dump()
    assert (details["cache_write_5m_tokens"], details["cache_write_1h_tokens"]) == (40, 60)
    charge = cache_charge(usage.completion_tokens)
    assert int(raw.headers["x-tallyhub-charge-nanocredits"]) == charge


def test_a_streamed_chat_carries_the_cache_counts_and_exact_charge_in_its_final_usage(served) -> None:
    gateway, upstream, key = served
    upstream.script(AnthropicScript.usage(**CACHE_USAGE))
    chunks = list(
        chat(gateway, key).chat.completions.create(
            model=MODEL,
            max_tokens=200,
            messages=[{"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": HOUR}]}],  # type: ignore[list-item]
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert upstream.requests[-1].json["messages"][0]["content"][0]["cache_control"] == HOUR
    usage = chunks[-1].usage
    assert usage is not None
    extra = usage.model_extra or {}
    charge = cache_charge(usage.completion_tokens)
    assert extra["cost_nanocredits"] == charge and extra["cost_decimal"] == credits_text(charge)
    assert (extra["cache_write_5m_tokens"], extra["cache_write_1h_tokens"]) == (40, 60)


# -- extended thinking across turns --------------------------------------------------


def _second_turn(first: anthropic.types.Message) -> list[dict[str, Any]]:
    call = next(block for block in first.content if block.type == "tool_use")
    return [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18C"}]},
    ]


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
def test_a_thinking_tool_loop_through_messages_sends_the_signed_block_back(served, streamed: bool) -> None:
    gateway, upstream, key = served
    client = claude(gateway, key)
    ask: dict[str, Any] = dict(
        model=MODEL,
        max_tokens=4000,
        thinking={"type": "enabled", "budget_tokens": 2000},
        tools=[WEATHER],
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    )
    if streamed:
        with client.messages.stream(**ask) as stream:
            first = stream.get_final_message()
    else:
        first = client.messages.create(**ask)
    thinking = first.content[0]
    assert thinking.type == "thinking" and thinking.thinking == THINKING_TEXT
    assert thinking.signature == "fake-signature-000001"  # the upstream's own signature, not ""

    second = client.messages.create(**{**ask, "messages": _second_turn(first)})

    replayed = upstream.requests[-1].json["messages"][1]["content"]
    assert replayed[0] == {"type": "thinking", "thinking": THINKING_TEXT, "signature": "fake-signature-000001"}
    assert [block["type"] for block in replayed] == ["thinking", "text", "tool_use"]
    assert second.stop_reason == "end_turn" and second.content[-1].type == "text"


def test_a_thinking_tool_loop_through_chat_sends_the_thinking_blocks_back(served) -> None:
    gateway, upstream, key = served
    client = chat(gateway, key)
    question = {"role": "user", "content": "Weather in Paris?"}
    first = client.chat.completions.create(
        model=MODEL, max_tokens=4000, reasoning_effort="low", tools=[WEATHER_FUNCTION], messages=[question]
    )
    assert upstream.requests[-1].json["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    reply = first.choices[0].message
    blocks = (reply.model_extra or {})["thinking_blocks"]
    assert blocks == [{"type": "thinking", "thinking": THINKING_TEXT, "signature": "fake-signature-000001"}]
    assert reply.tool_calls
    call = reply.tool_calls[0]
    history = [
        question,
        {
            "role": "assistant",
            "content": reply.content,
            "tool_calls": [call.model_dump()],
            "thinking_blocks": blocks,
        },
        {"role": "tool", "tool_call_id": call.id, "content": "18C"},
    ]
    second = client.chat.completions.create(
        model=MODEL,
        max_tokens=4000,
        reasoning_effort="low",
        tools=[WEATHER_FUNCTION],
        messages=history,  # type: ignore[arg-type]
    )
    replayed = upstream.requests[-1].json["messages"][1]["content"]
    assert replayed[0] == blocks[0]
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.content


def test_a_streamed_chat_answer_carries_the_signed_thinking_block(served) -> None:
    gateway, _, key = served
    chunks = list(
        chat(gateway, key).chat.completions.create(
            model=MODEL,
            max_tokens=4000,
            reasoning_effort="medium",
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
        )
    )
    deltas = [chunk.choices[0].delta.model_extra or {} for chunk in chunks if chunk.choices]
    assert "".join(delta.get("reasoning_content") or "" for delta in deltas) == THINKING_TEXT
    blocks = [block for delta in deltas for block in delta.get("thinking_blocks") or ()]
    assert blocks == [{"type": "thinking", "thinking": THINKING_TEXT, "signature": "fake-signature-000001"}]
