"""Prompt caching and extended thinking through the Anthropic adapter, against the fake
Anthropic server (which checks Anthropic's rules: signatures, thinking first in a tool
loop, budgets under max_tokens, at most 4 cache breakpoints): ``cache_control`` marks reach
it in place, ``thinking_blocks`` come back with their signatures (plain and streamed) and
go out again first in their turn, and ``reasoning_effort`` becomes a thinking budget."""

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.providers.anthropic_request import messages_request
from adapters.providers.fidelity import CLAUDE_BUDGETS, CLAUDE_MIN_BUDGET
from domain.errors import InvalidRequest, UpstreamError
from tests.fakes.anthropic_upstream import REDACTED_DATA, THINKING_TEXT, AnthropicScript, FakeAnthropicUpstream
from tests.unit.providers.test_anthropic import USER, WEATHER_TOOL, complete, deltas, sent, start_error, stream

EPHEMERAL = {"type": "ephemeral"}
HOUR = {"type": "ephemeral", "ttl": "1h"}
THINKING = {"type": "enabled", "budget_tokens": 1024}


@pytest.fixture(scope="module")
def upstream():
    with FakeAnthropicUpstream() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(upstream):
    upstream.reset()


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [USER], **extra}


# -- cache_control -------------------------------------------------------------------


def test_cache_marks_on_system_parts_messages_and_tools_reach_anthropic_in_place(upstream):
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "Long rules", "cache_control": HOUR}]},
        {"role": "system", "content": "More rules"},
        {"role": "user", "content": "Earlier question", "cache_control": EPHEMERAL},  # a marked string
        {"role": "assistant", "content": "Earlier answer"},
        {"role": "user", "content": [{"type": "text", "text": "Now", "cache_control": EPHEMERAL}]},
    ]
    tools = [{**WEATHER_TOOL, "cache_control": EPHEMERAL}]
    complete(upstream, body(messages=messages, tools=tools))

    request = sent(upstream)
    assert request["system"] == [
        {"type": "text", "text": "Long rules", "cache_control": HOUR},
        {"type": "text", "text": "More rules"},
    ]
    assert request["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Earlier question", "cache_control": EPHEMERAL}]},
        {"role": "assistant", "content": "Earlier answer"},
        {"role": "user", "content": [{"type": "text", "text": "Now", "cache_control": EPHEMERAL}]},
    ]
    assert request["tools"][0]["cache_control"] == EPHEMERAL


def test_cache_marks_on_tool_calls_and_tool_messages_mark_their_blocks(upstream):
    call = {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    messages = [
        USER,
        {"role": "assistant", "content": None, "tool_calls": [{**call, "cache_control": EPHEMERAL}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C", "cache_control": HOUR},
    ]
    complete(upstream, body(messages=messages, tools=[WEATHER_TOOL]))

    request = sent(upstream)
    assert request["messages"][1]["content"][0]["cache_control"] == EPHEMERAL
    assert request["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C", "cache_control": HOUR}
    ]


def test_more_than_four_breakpoints_is_anthropics_400_passed_on(upstream):
    messages = [
        {"role": "user", "content": [{"type": "text", "text": f"p{n}", "cache_control": EPHEMERAL}]} for n in range(5)
    ]
    error = start_error(upstream, body(messages=messages))
    assert isinstance(error, UpstreamError) and error.status == 400
    assert "A maximum of 4 blocks with cache_control" in str(error)


def test_a_cache_control_that_is_not_an_object_is_refused_before_sending(upstream):
    error = start_error(upstream, body(messages=[{"role": "user", "content": "x", "cache_control": "yes"}]))
    assert isinstance(error, InvalidRequest) and error.param == "messages.0.cache_control"
    assert upstream.requests == []


def test_cache_reads_and_writes_by_ttl_come_back_in_the_usage(upstream):
    upstream.script(
        AnthropicScript.usage(
            input_tokens=10, cache_read_input_tokens=300, ephemeral_5m_input_tokens=40, ephemeral_1h_input_tokens=60
        )
    )
    usage = complete(upstream, body())["usage"]
    assert usage["prompt_tokens"] == 410
    assert usage["prompt_tokens_details"] == {
        "cached_tokens": 300,
        "cache_write_tokens": 100,
        "cache_write_5m_tokens": 40,
        "cache_write_1h_tokens": 60,
    }


# -- thinking blocks -----------------------------------------------------------------


def test_an_answer_carries_its_thinking_blocks_with_signatures_in_order(upstream):
    upstream.script(AnthropicScript.redacted_thinking())
    message = complete(upstream, body(thinking=THINKING))["choices"][0]["message"]
    assert message["reasoning_content"] == THINKING_TEXT
    assert message["thinking_blocks"] == [
        {"type": "thinking", "thinking": THINKING_TEXT, "signature": "fake-signature-000001"},
        {"type": "redacted_thinking", "data": REDACTED_DATA},
    ]


def test_a_stream_carries_each_thinking_block_whole_when_it_ends(upstream):
    upstream.script(AnthropicScript.redacted_thinking())
    payloads, failure = stream(upstream, body(thinking=THINKING))
    assert failure is None
    received = deltas(payloads)
    assert "".join(d.get("reasoning_content") or "" for d in received) == THINKING_TEXT
    blocks = [block for d in received for block in d.get("thinking_blocks") or ()]
    assert blocks == [
        {"type": "thinking", "thinking": THINKING_TEXT, "signature": "fake-signature-000001"},
        {"type": "redacted_thinking", "data": REDACTED_DATA},
    ]
    first_block = next(n for n, d in enumerate(received) if d.get("thinking_blocks"))
    last_thought = max(n for n, d in enumerate(received) if d.get("reasoning_content"))
    assert first_block > last_thought  # the signed block follows its text


def test_a_tool_loop_with_thinking_sends_the_first_turns_blocks_back_first(upstream):
    tools = [WEATHER_TOOL]
    upstream.script(AnthropicScript.redacted_thinking())
    first = complete(upstream, body(thinking=THINKING, tools=tools))["choices"][0]["message"]
    assert first["tool_calls"] and first["thinking_blocks"]
    call = first["tool_calls"][0]
    history = [
        USER,
        {"role": "assistant", **{k: first[k] for k in ("content", "tool_calls", "thinking_blocks")}},
        {"role": "tool", "tool_call_id": call["id"], "content": "18C"},
    ]
    second = complete(upstream, body(messages=history, thinking=THINKING, tools=tools))
    assert second["choices"][0]["message"]["content"]
    replayed = upstream.requests[-1].json["messages"][1]["content"]
    assert [block["type"] for block in replayed] == ["thinking", "redacted_thinking", "text", "tool_use"]
    assert replayed[0]["signature"] == "fake-signature-000001"


def test_without_its_thinking_blocks_the_tool_loop_is_refused_by_anthropic(upstream):
    """What the blocks are for: the fake, like Anthropic, refuses the loop without them."""
    first = complete(upstream, body(thinking=THINKING, tools=[WEATHER_TOOL]))["choices"][0]["message"]
    history = [
        USER,
        {"role": "assistant", "content": first["content"], "tool_calls": first["tool_calls"]},
        {"role": "tool", "tool_call_id": first["tool_calls"][0]["id"], "content": "18C"},
    ]
    error = start_error(upstream, body(messages=history, thinking=THINKING, tools=[WEATHER_TOOL]))
    assert isinstance(error, UpstreamError) and "must start with a thinking block" in str(error)


def test_thinking_with_an_empty_signature_is_left_out_and_malformed_blocks_refused(upstream):
    unsigned = {"type": "thinking", "thinking": "another provider's reasoning", "signature": ""}
    history = [USER, {"role": "assistant", "content": "Hi", "thinking_blocks": [unsigned]}, USER]
    complete(upstream, body(messages=history))
    assert sent(upstream)["messages"][1] == {"role": "assistant", "content": "Hi"}

    broken = [USER, {"role": "assistant", "content": "Hi", "thinking_blocks": [{"type": "thinking"}]}, USER]
    error = start_error(upstream, body(messages=broken))
    assert isinstance(error, InvalidRequest) and error.param == "messages.1.thinking_blocks.0"


# -- reasoning_effort ----------------------------------------------------------------


@pytest.mark.parametrize("effort", ["minimal", "low", "medium", "high"])
def test_reasoning_effort_becomes_a_thinking_budget_from_the_table(upstream, effort):
    answer = complete(upstream, body(reasoning_effort=effort, max_tokens=8192))
    assert sent(upstream)["thinking"] == {"type": "enabled", "budget_tokens": CLAUDE_BUDGETS[effort]}
    assert sent(upstream)["max_tokens"] == 8192
    assert answer["choices"][0]["message"]["reasoning_content"] == THINKING_TEXT


def test_the_budget_is_lowered_to_fit_under_max_tokens_never_above_it(upstream):
    complete(upstream, body(reasoning_effort="high", max_tokens=3000))
    assert sent(upstream)["thinking"] == {"type": "enabled", "budget_tokens": 2999}
    assert sent(upstream)["max_tokens"] == 3000


def test_an_explicit_thinking_wins_and_effort_none_asks_for_no_thinking(upstream):
    complete(upstream, body(reasoning_effort="high", thinking={"type": "enabled", "budget_tokens": 2000}))
    assert upstream.requests[-1].json["thinking"] == {"type": "enabled", "budget_tokens": 2000}
    complete(upstream, body(reasoning_effort="none"))
    assert "thinking" not in upstream.requests[-1].json


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"reasoning_effort": "low", "max_tokens": 1024}, "reasoning_effort"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"reasoning_effort": "low", "temperature": 0.2}, "temperature"),
        ({"reasoning_effort": "low", "top_p": 0.5}, "top_p"),
        ({"reasoning_effort": "low", "top_k": 5}, "top_k"),
        ({"reasoning_effort": "low", "tools": [WEATHER_TOOL], "tool_choice": "required"}, "tool_choice"),
    ],
)
def test_what_thinking_cannot_go_with_is_refused_before_sending(upstream, extra, param):
    error = start_error(upstream, body(**extra))
    assert isinstance(error, InvalidRequest) and error.param == param
    assert upstream.requests == []


def test_temperature_one_and_top_p_near_one_are_allowed_with_thinking(upstream):
    complete(upstream, body(reasoning_effort="low", temperature=1, top_p=0.95))
    assert sent(upstream)["temperature"] == 1 and sent(upstream)["top_p"] == 0.95


@given(effort=st.sampled_from(sorted(CLAUDE_BUDGETS)), max_tokens=st.integers(1, 200_000))
def test_a_budget_always_fits_under_the_callers_max_tokens_or_is_refused(effort, max_tokens):
    body = {"model": "m", "messages": [USER], "reasoning_effort": effort, "max_tokens": max_tokens}
    try:
        request = messages_request(body, "claude")
    except InvalidRequest as refused:
        assert refused.param == "reasoning_effort" and max_tokens <= CLAUDE_MIN_BUDGET
        return
    budget = request["thinking"]["budget_tokens"]
    assert request["max_tokens"] == max_tokens  # the hold's worst case is unchanged
    assert CLAUDE_MIN_BUDGET <= budget <= CLAUDE_BUDGETS[effort] and budget < max_tokens
