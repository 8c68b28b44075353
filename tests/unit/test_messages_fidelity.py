"""Prompt caching and extended thinking through the Anthropic ingress translation
(``adapters/http/messages_translate.py``): ``cache_control`` marks and earlier thinking
blocks become the chat body's conventions and come back out of the Anthropic provider's
translation unchanged; answers carry thinking blocks with their real signatures, plain and
streamed (``signature_delta``), also through both stream translators in a row."""

from typing import Any

import pytest

from adapters.http.messages_translate import MessagesStreamTranslator, chat_body_from_messages, message_from_completion
from adapters.providers.anthropic_request import messages_request
from adapters.providers.anthropic_response import StreamTranslator
from domain.errors import InvalidRequest
from tests.unit.test_messages_translate import PIXEL, WEATHER, chunk, completion, request, translated_events

EPHEMERAL = {"type": "ephemeral"}
HOUR = {"type": "ephemeral", "ttl": "1h"}
SIGNED = {"type": "thinking", "thinking": "Paris first.", "signature": "sig-1"}
REDACTED = {"type": "redacted_thinking", "data": "opaque"}


def test_cache_marks_become_the_chat_bodys_marks_in_the_same_places():
    body = request(
        system=[{"type": "text", "text": "Rules", "cache_control": HOUR}],
        tools=[{**WEATHER, "cache_control": EPHEMERAL}],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}},
                    {"type": "text", "text": "What is it?", "cache_control": EPHEMERAL},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}, "cache_control": EPHEMERAL}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "18C", "cache_control": HOUR}],
            },
        ],
    )
    chat = chat_body_from_messages(body)
    assert chat["messages"][0] == {
        "role": "system",
        "content": [{"type": "text", "text": "Rules", "cache_control": HOUR}],
    }
    assert chat["messages"][1]["content"][1] == {"type": "text", "text": "What is it?", "cache_control": EPHEMERAL}
    assert chat["messages"][2]["tool_calls"][0]["cache_control"] == EPHEMERAL
    assert chat["messages"][3] == {"role": "tool", "tool_call_id": "t1", "content": "18C", "cache_control": HOUR}
    assert chat["tools"][0]["cache_control"] == EPHEMERAL


def test_a_single_marked_text_stays_a_part_so_its_mark_is_kept():
    body = request(messages=[{"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": HOUR}]}])
    assert chat_body_from_messages(body)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": HOUR}]}
    ]


def test_earlier_thinking_blocks_become_thinking_blocks_in_order():
    turn = {
        "role": "assistant",
        "content": [SIGNED, REDACTED, {"type": "text", "text": "Checking."}],
    }
    chat = chat_body_from_messages(request(messages=[{"role": "user", "content": "Hi"}, turn]))
    assert chat["messages"][1] == {"role": "assistant", "content": "Checking.", "thinking_blocks": [SIGNED, REDACTED]}


@pytest.mark.parametrize(
    "block",
    [{"type": "thinking", "thinking": "x"}, {"type": "redacted_thinking"}, {"type": "thinking", "signature": 1}],
)
def test_a_thinking_block_without_its_fields_is_refused(block):
    turn = {"role": "assistant", "content": [block, {"type": "text", "text": "Hi"}]}
    with pytest.raises(InvalidRequest) as refused:
        chat_body_from_messages(request(messages=[{"role": "user", "content": "Hi"}, turn]))
    assert refused.value.param is not None and refused.value.param.startswith("messages.1.content.0")


def test_marks_and_thinking_survive_the_round_trip_through_the_anthropic_provider():
    original = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 4096,
        "system": [{"type": "text", "text": "Rules", "cache_control": HOUR}, {"type": "text", "text": "More"}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather?", "cache_control": EPHEMERAL}]},
            {
                "role": "assistant",
                "content": [
                    SIGNED,
                    REDACTED,
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}},
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "18C", "cache_control": EPHEMERAL}],
            },
        ],
        "tools": [{**WEATHER, "cache_control": HOUR}],
        "thinking": {"type": "enabled", "budget_tokens": 2048},
    }
    assert messages_request(chat_body_from_messages(original), "claude-sonnet-4-6") == original


def test_an_answers_thinking_blocks_keep_their_signatures():
    answer = completion(
        {"content": "Paris.", "reasoning_content": "Paris first.", "thinking_blocks": [SIGNED, REDACTED]}
    )
    message = message_from_completion(answer, "anthropic/claude-sonnet-4")
    assert message["content"] == [SIGNED, REDACTED, {"type": "text", "text": "Paris."}]


def test_a_streamed_thinking_block_ends_with_its_signature_delta_and_a_redacted_one_comes_whole():
    events = translated_events(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"reasoning_content": "Paris "}),
            chunk({"reasoning_content": "first."}),
            chunk({"thinking_blocks": [SIGNED]}),
            chunk({"thinking_blocks": [REDACTED]}),
            chunk({"content": "Paris."}),
            chunk({}, finish="stop"),
        ]
    )
    starts = [data["content_block"] for name, data in events if name == "content_block_start"]
    assert [block["type"] for block in starts] == ["thinking", "redacted_thinking", "text"]
    assert starts[1] == REDACTED
    thinking_deltas = [data["delta"] for name, data in events if name == "content_block_delta" and data["index"] == 0]
    assert thinking_deltas == [
        {"type": "thinking_delta", "thinking": "Paris "},
        {"type": "thinking_delta", "thinking": "first."},
        {"type": "signature_delta", "signature": "sig-1"},
    ]
    stops = [data["index"] for name, data in events if name == "content_block_stop"]
    assert stops == [0, 1, 2]


def test_a_thinking_block_never_streamed_as_text_comes_whole_and_a_second_one_opens_a_new_block():
    events = translated_events(
        [
            chunk({"thinking_blocks": [{"type": "thinking", "thinking": "", "signature": "sig-0"}]}),
            chunk({"reasoning_content": "Again."}),
            chunk({"thinking_blocks": [{"type": "thinking", "thinking": "Again.", "signature": "sig-2"}]}),
            chunk({}, finish="stop"),
        ]
    )
    deltas = [(data["index"], data["delta"]) for name, data in events if name == "content_block_delta"]
    assert deltas == [
        (0, {"type": "signature_delta", "signature": "sig-0"}),
        (1, {"type": "thinking_delta", "thinking": "Again."}),
        (1, {"type": "signature_delta", "signature": "sig-2"}),
    ]


def test_anthropics_stream_keeps_its_thinking_blocks_through_both_translators():
    """Anthropic's events → the provider's chat chunks → the ingress's Anthropic events: the
    blocks, their text and signature come out as they went in."""
    upstream = [
        {"type": "message_start", "message": {"id": "msg_1", "model": "c", "usage": {"input_tokens": 5}}},
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Paris first."}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig-1"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": REDACTED},
        {"type": "content_block_stop", "index": 1},
        {"type": "content_block_start", "index": 2, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 2, "delta": {"type": "text_delta", "text": "Paris."}},
        {"type": "content_block_stop", "index": 2},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}},
        {"type": "message_stop"},
    ]
    provider = StreamTranslator(created=1)
    ingress = MessagesStreamTranslator("anthropic/claude")
    events: list[tuple[str, dict[str, Any]]] = []
    for event in upstream:
        for piece in provider.take(event):
            events += ingress.feed(piece)
    events += ingress.finish()
    relayed = [(name, data) for name, data in events if name.startswith("content_block")]
    expected = [(event["type"], event) for event in upstream if event["type"].startswith("content_block")]
    assert relayed == expected
