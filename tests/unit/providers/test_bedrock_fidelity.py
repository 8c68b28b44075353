"""Prompt caching and extended thinking through the Bedrock adapter, against the fake
Bedrock (which validates every body against botocore's model of Converse and checks
reasoning signatures and thinking budgets): ``cache_control`` marks become ``cachePoint``
blocks after the marked block, reasoning comes back with its signature (plain and
streamed) and goes out again first in its turn, and ``reasoning_effort`` becomes Claude's
thinking budget."""

from typing import Any

import pytest

from adapters.providers.bedrock_request import converse_request
from adapters.providers.fidelity import CLAUDE_BUDGETS
from domain.errors import InvalidRequest, UpstreamError
from tests.fakes.bedrock_upstream import REASONING_SIGNATURE, REDACTED_DATA, BedrockScript, FakeBedrockUpstream
from tests.unit.providers.test_bedrock import MESSAGES, WEATHER, chat, deltas, route_for, stream

EPHEMERAL = {"type": "ephemeral"}
HOUR = {"type": "ephemeral", "ttl": "1h"}
NOVA = "amazon.nova-pro-v1:0"
SIGNED = {"type": "thinking", "thinking": "Think first", "signature": REASONING_SIGNATURE}
REDACTED = {"type": "redacted_thinking", "data": REDACTED_DATA}


@pytest.fixture(scope="module")
def fake():
    with FakeBedrockUpstream(
        access_key_id="AKIATESTBEDROCK00002", secret_access_key="s3cr3t/Key+Bedrock0000000002", region="eu-west-3"
    ) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(fake):
    fake.reset()


def sent(fake: FakeBedrockUpstream) -> dict[str, Any]:
    return fake.requests[-1].json


def test_cache_marks_become_cache_points_after_the_marked_blocks(fake):
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "Rules", "cache_control": HOUR}]},
        {"role": "user", "content": "Earlier", "cache_control": EPHEMERAL},
        {"role": "assistant", "content": "Answer"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Now", "cache_control": EPHEMERAL}, {"type": "text", "text": "?"}],
        },
    ]
    chat(
        route_for(fake),
        {"model": "m", "messages": messages, "tools": [{**WEATHER, "cache_control": HOUR}]},
    )

    body = sent(fake)
    assert body["system"] == [{"text": "Rules"}, {"cachePoint": {"type": "default", "ttl": "1h"}}]
    assert body["messages"][0]["content"] == [{"text": "Earlier"}, {"cachePoint": {"type": "default"}}]
    assert body["messages"][2]["content"] == [{"text": "Now"}, {"cachePoint": {"type": "default"}}, {"text": "?"}]
    assert body["toolConfig"]["tools"][1] == {"cachePoint": {"type": "default", "ttl": "1h"}}
    assert "toolSpec" in body["toolConfig"]["tools"][0]


def test_cache_points_are_sent_for_any_model_and_thinking_only_for_claude(fake):
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello", "thinking_blocks": [SIGNED]},
        {"role": "user", "content": "Again", "cache_control": EPHEMERAL},
    ]
    chat(route_for(fake, model=NOVA), {"model": "m", "messages": messages, "reasoning_effort": "high"})
    body = sent(fake)
    assert body["messages"][1]["content"] == [{"text": "Hello"}]
    assert body["messages"][2]["content"][-1] == {"cachePoint": {"type": "default"}}
    assert "additionalModelRequestFields" not in body


def test_reasoning_comes_back_with_its_signature_and_redacted_content(fake):
    fake.script(BedrockScript.with_redacted_reasoning("Think first"))
    message = chat(route_for(fake), {"model": "m", "messages": MESSAGES})["choices"][0]["message"]
    assert message["reasoning_content"] == "Think first"
    assert message["thinking_blocks"] == [SIGNED, REDACTED]


def test_a_stream_carries_each_reasoning_block_whole_when_it_stops(fake):
    fake.script(BedrockScript.with_redacted_reasoning("Think first"))
    chunks, failure = stream(route_for(fake), {"model": "m", "messages": MESSAGES})
    assert failure is None
    received = deltas(chunks)
    assert "".join(d.get("reasoning_content") or "" for d in received) == "Think first"
    assert [b for d in received for b in d.get("thinking_blocks") or ()] == [SIGNED, REDACTED]


def test_a_claude_tool_loop_sends_its_reasoning_back_first_in_the_turn(fake):
    fake.script(BedrockScript.with_redacted_reasoning("Think first"))
    ask = {"model": "m", "tools": [WEATHER], "reasoning_effort": "low", "max_tokens": 2048}
    first = chat(route_for(fake), {**ask, "messages": MESSAGES})["choices"][0]["message"]
    assert sent(fake)["additionalModelRequestFields"] == {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    call = first["tool_calls"][0]
    history = [
        *MESSAGES,
        {"role": "assistant", "content": None, "tool_calls": [call], "thinking_blocks": first["thinking_blocks"]},
        {"role": "tool", "tool_call_id": call["id"], "content": "18C"},
    ]
    chat(route_for(fake), {**ask, "messages": history})
    turn = sent(fake)["messages"][1]["content"]
    assert turn[0] == {"reasoningContent": {"reasoningText": {"text": "Think first", "signature": REASONING_SIGNATURE}}}
    assert turn[1] == {"reasoningContent": {"redactedContent": REDACTED_DATA}}
    assert "toolUse" in turn[2]


def test_a_changed_signature_is_refused_by_the_fake_as_bedrock_would(fake):
    history = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello", "thinking_blocks": [{**SIGNED, "signature": "forged"}]},
        {"role": "user", "content": "Again"},
    ]
    with pytest.raises(UpstreamError) as refused:
        chat(route_for(fake), {"model": "m", "messages": history})
    assert refused.value.status == 400


@pytest.mark.parametrize("effort", ["minimal", "low", "medium", "high"])
def test_reasoning_effort_becomes_claudes_thinking_within_max_tokens(effort):
    request = converse_request(
        {"model": "m", "messages": MESSAGES, "reasoning_effort": effort}, "us.anthropic.claude-sonnet-4"
    )
    budget = min(CLAUDE_BUDGETS[effort], 4095)
    assert request["additionalModelRequestFields"] == {"thinking": {"type": "enabled", "budget_tokens": budget}}
    assert request["inferenceConfig"]["maxTokens"] == 4096  # the default cap the hold assumed, now explicit


def test_an_explicit_thinking_wins_and_what_thinking_cannot_go_with_is_refused():
    thinking = {"type": "enabled", "budget_tokens": 2000}
    body = {"model": "m", "messages": MESSAGES, "reasoning_effort": "high", "thinking": thinking, "max_tokens": 5000}
    assert converse_request(body, "anthropic.claude-3-7")["additionalModelRequestFields"] == {"thinking": thinking}
    for extra, param in (
        ({"temperature": 0.2}, "temperature"),
        ({"max_tokens": 1000}, "reasoning_effort"),
        ({"reasoning_effort": "max"}, "reasoning_effort"),
    ):
        with pytest.raises(InvalidRequest) as refused:
            converse_request(
                {"model": "m", "messages": MESSAGES, "reasoning_effort": "low", **extra}, "anthropic.claude-3-7"
            )
        assert refused.value.param == param
