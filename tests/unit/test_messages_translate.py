"""The Anthropic ingress translation (``adapters/http/messages_translate.py``): shapes,
round trips through the Anthropic *provider*'s translation (the opposite direction),
and — what matters most — the official ``anthropic`` SDK parsing what it produces.

The SDK tests put a tiny "gateway" behind an ``httpx2.MockTransport`` (anthropic 2.x
uses httpx2 and refuses plain httpx clients): the SDK's real request goes through
``chat_body_from_messages``, a canned OpenAI answer through the functions under test."""

import json
from collections.abc import Callable
from typing import Any

import anthropic
import httpx2
import orjson
import pytest

from adapters.http.messages_translate import (
    MessagesStreamTranslator,
    anthropic_error_body,
    chat_body_from_messages,
    error_event,
    message_from_completion,
    message_with_usage,
    sse_event,
)
from adapters.providers.anthropic_request import messages_request
from adapters.providers.anthropic_response import StreamTranslator, chat_completion
from domain.errors import InvalidRequest, MalformedUpstreamAnswer

MODEL = "anthropic/claude-sonnet-4"
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
WEATHER = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
RECEIPT = {
    "cost": 0.000123,
    "cost_decimal": "0.000123000",
    "cost_nanocredits": 123000,
    "price_book_version": 7,
    "usage_source": "provider",
}
USAGE = {
    "prompt_tokens": 120,
    "completion_tokens": 30,
    "total_tokens": 150,
    "prompt_tokens_details": {"cached_tokens": 20},
    "completion_tokens_details": {"reasoning_tokens": 0},
}


def request(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 256, "messages": [{"role": "user", "content": "Hi"}], **fields}


def completion(message: dict[str, Any], finish: str = "stop", usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "created": 1,
        "model": "openai/gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
        "usage": {**USAGE, **RECEIPT} if usage is None else usage,
    }


def chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    document = {"id": "chatcmpl-s1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": choices}
    return document if usage is None else {**document, "usage": usage}


def call_fragment(index: int, arguments: str, call_id: str | None = None, name: str | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if call_id:
        call.update(id=call_id, type="function")
        call["function"]["name"] = name
    return {"tool_calls": [call]}


# A realistic OpenAI stream: role, text in pieces, one tool call in fragments, finish, usage.
TOOL_STREAM = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Let me "}),
    chunk({"content": "check."}),
    chunk(call_fragment(0, "", "call_w1", "get_weather")),
    chunk(call_fragment(0, '{"ci')),
    chunk(call_fragment(0, 'ty": "Par')),
    chunk(call_fragment(0, 'is"}')),
    chunk({}, finish="tool_calls"),
    chunk(usage={**USAGE, **RECEIPT}),
]


def translated_events(chunks: list[dict[str, Any]], model: str = MODEL) -> list[tuple[str, dict[str, Any]]]:
    translator = MessagesStreamTranslator(model)
    events = [event for c in chunks for event in translator.feed(c)]
    return events + translator.finish()


# -- request ----------------------------------------------------------------------


def test_system_blocks_and_text_turns_become_chat_messages():
    body = request(
        system=[
            {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Be kind."},
        ],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        ],
    )

    chat = chat_body_from_messages(body)

    assert chat == {
        "model": MODEL,
        "max_tokens": 256,
        "messages": [
            {
                "role": "system",
                "content": [
                    {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
                    {"type": "text", "text": "Be kind."},
                ],
            },
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        ],
    }


def test_a_string_system_is_one_system_message_first():
    assert chat_body_from_messages(request(system="Be brief."))["messages"][0] == {
        "role": "system",
        "content": "Be brief.",
    }


def test_base64_and_url_images_become_image_url_parts():
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "What are these?"},
    ]

    chat = chat_body_from_messages(request(messages=[{"role": "user", "content": content}]))

    assert chat["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                {"type": "text", "text": "What are these?"},
            ],
        }
    ]


def test_tool_use_becomes_tool_calls_and_tool_results_become_tool_messages_before_the_rest_of_the_turn():
    messages = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "two calls", "signature": "sig"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "is_error": True,
                    "content": [{"type": "text", "text": "station offline"}, {"type": "text", "text": "retry later"}],
                },
                {"type": "text", "text": "Thanks"},
            ],
        },
    ]

    chat = chat_body_from_messages(request(messages=messages))

    assert chat["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "toolu_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                },
            ],
            "thinking_blocks": [{"type": "thinking", "thinking": "two calls", "signature": "sig"}],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: station offline\nretry later"},
        {"role": "user", "content": "Thanks"},
    ]


def test_an_assistant_turn_of_only_tool_use_has_null_content():
    turn = {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}
    chat = chat_body_from_messages(request(messages=[{"role": "user", "content": "go"}, turn]))
    assert chat["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        (
            {"type": "tool", "name": "get_weather"},
            {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        ),
        ({"type": "auto", "disable_parallel_tool_use": True}, {"tool_choice": "auto", "parallel_tool_calls": False}),
    ],
)
def test_tools_become_function_tools_and_tool_choice_is_translated(tool_choice, expected):
    chat = chat_body_from_messages(
        request(tools=[{**WEATHER, "cache_control": {"type": "ephemeral"}}], tool_choice=tool_choice)
    )

    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city",
                "parameters": WEATHER["input_schema"],
            },
            "cache_control": {"type": "ephemeral"},
        }
    ]
    assert {key: chat[key] for key in expected} == expected


def test_sampling_stream_user_and_anthropic_only_knobs():
    thinking = {"type": "enabled", "budget_tokens": 1024}
    chat = chat_body_from_messages(
        request(
            temperature=0.2,
            top_p=0.9,
            top_k=40,
            stop_sequences=["END", ""],
            stream=True,
            metadata={"user_id": "u-42"},
            thinking=thinking,
            service_tier="auto",
        )
    )

    assert {k: v for k, v in chat.items() if k not in ("model", "messages")} == {
        "max_tokens": 256,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["END"],
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "u-42",
        "top_k": 40,
        "thinking": thinking,
    }


def test_a_plain_request_asks_for_no_stream_and_no_stream_options():
    chat = chat_body_from_messages(request(stream=False))
    assert "stream" not in chat and "stream_options" not in chat


def test_pdf_documents_and_output_format_are_translated():
    document = {
        "type": "document",
        "title": "report.pdf",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"},
    }
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    chat = chat_body_from_messages(
        request(
            messages=[{"role": "user", "content": [document]}],
            output_config={"format": {"type": "json_schema", "schema": schema}},
        )
    )

    assert chat["messages"][0]["content"] == [
        {"type": "file", "file": {"filename": "report.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}}
    ]
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}


def test_an_anthropic_request_survives_the_round_trip_through_the_anthropic_provider():
    original = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 300,
        "system": "Be brief.",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}},
                    {"type": "text", "text": "Weather here?"},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                    {"type": "text", "text": "And tomorrow?"},
                ],
            },
        ],
        "tools": [WEATHER],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "temperature": 0.5,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "stream": True,
        "metadata": {"user_id": "u-1"},
        "top_k": 5,
        "thinking": {"type": "enabled", "budget_tokens": 2000},
    }

    assert messages_request(chat_body_from_messages(original), "claude-sonnet-4-6") == original


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": "100"}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"model": None}, "model"),
        ({"messages": []}, "messages"),
        ({"messages": None}, "messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]}, "messages.0.content.0"),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]},
            "messages.0.content.0",
        ),
        (
            {"messages": [{"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "t"}]}]},
            "messages.0.content.0",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image", "source": {"type": "base64", "media_type": "image/tiff", "data": "x"}}
                        ],
                    }
                ]
            },
            "messages.0.content.0.source.media_type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "t",
                                "content": [{"type": "image", "source": {"type": "url", "url": "https://x"}}],
                            }
                        ],
                    }
                ]
            },
            "messages.0.content.0.content.0",
        ),
        ({"system": 3}, "system"),
        ({"tools": [{"name": "f"}]}, "tools.0.input_schema"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0.type"),
        ({"tools": [WEATHER], "tool_choice": {"type": "required"}}, "tool_choice"),
        ({"stop_sequences": "END"}, "stop_sequences"),
        ({"temperature": "hot"}, "temperature"),
        ({"stream": "yes"}, "stream"),
        ({"mcp_servers": [{"type": "url", "url": "https://mcp", "name": "m"}]}, "mcp_servers"),
    ],
)
def test_bad_input_is_refused_with_the_offending_param(change, param):
    body = {key: value for key, value in {**request(), **change}.items() if value is not None}

    with pytest.raises(InvalidRequest) as caught:
        chat_body_from_messages(body)

    assert caught.value.param == param


# -- plain answer -----------------------------------------------------------------


def test_a_completion_becomes_an_anthropic_message_with_tool_use_usage_and_charge():
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Ro'}},
    ]

    message = message_from_completion(completion({"content": "Checking.", "tool_calls": calls}, "tool_calls"), MODEL)

    assert message == {
        "id": "msg_chatcmpl-abc",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 100, "cache_read_input_tokens": 20, "output_tokens": 30},
        "tallyhub": RECEIPT,
    }


@pytest.mark.parametrize(
    ("choice", "stop_reason", "stop_sequence"),
    [
        ({"finish_reason": "stop"}, "end_turn", None),
        ({"finish_reason": "stop", "stop_reason": "END"}, "stop_sequence", "END"),
        ({"finish_reason": "length"}, "max_tokens", None),
        ({"finish_reason": "content_filter"}, "refusal", None),
        ({"finish_reason": "tool_calls"}, "tool_use", None),
        ({"finish_reason": None}, "end_turn", None),
    ],
)
def test_finish_reasons_become_stop_reasons(choice, stop_reason, stop_sequence):
    document = completion({"content": "x"})
    document["choices"][0] = {**document["choices"][0], **choice}

    message = message_from_completion(document, MODEL)

    assert (message["stop_reason"], message["stop_sequence"]) == (stop_reason, stop_sequence)


def test_a_refusal_is_text_with_the_refusal_stop_reason():
    message = message_from_completion(completion({"content": None, "refusal": "I can't help with that."}), MODEL)
    assert message["content"] == [{"type": "text", "text": "I can't help with that."}]
    assert message["stop_reason"] == "refusal"


def test_an_upstream_cost_without_tallyhubs_charge_is_not_shown_as_a_charge():
    usage = {"prompt_tokens": 5, "completion_tokens": 1, "cost": 0.5}  # OpenRouter's own figure
    assert "tallyhub" not in message_from_completion(completion({"content": "x"}, usage=usage), MODEL)


@pytest.mark.parametrize(
    "document",
    [
        {"id": "x", "choices": [], "usage": USAGE},
        {"id": "x", "usage": USAGE},
        {"id": "x", "choices": {"0": {"message": {"content": "hi"}}}},
        {"id": "x", "choices": ["hi"]},
        {"id": "x", "choices": [{"index": 0, "message": "hi"}]},
        {"id": "x", "choices": [{"index": 0, "message": {"content": "hi", "tool_calls": 7}}]},
    ],
    ids=[
        "no-choices",
        "choices-missing",
        "choices-an-object",
        "a-choice-not-an-object",
        "message-a-string",
        "tool-calls-a-number",
    ],
)
def test_a_completion_the_provider_garbled_is_a_malformed_upstream_answer(document: dict[str, Any]) -> None:
    # MalformedUpstreamAnswer is the provider's failure (READ_FAILURES): the call fails as a 502
    # before it is charged, where a ValueError or TypeError would be a bug of ours (a 500).
    with pytest.raises(MalformedUpstreamAnswer):
        message_from_completion(document, MODEL)


def test_the_charged_usage_replaces_the_completions_usage_and_charge_in_a_translated_message() -> None:
    upstream_charge = {**USAGE, "cost_nanocredits": 5, "cost": 5e-09, "cost_decimal": "0.000000005"}  # via Tallyhub
    message = message_from_completion(completion({"content": "x"}, usage=upstream_charge), MODEL)
    assert message["tallyhub"]["cost_nanocredits"] == 5
    charged = message_with_usage(message, {"prompt_tokens": 9, "completion_tokens": 4, **RECEIPT})
    assert charged["usage"] == {"input_tokens": 9, "cache_read_input_tokens": 0, "output_tokens": 4}
    assert charged["tallyhub"] == RECEIPT and list(charged)[-2:] == ["usage", "tallyhub"]
    assert "tallyhub" not in message_with_usage(message, {"prompt_tokens": 9, "completion_tokens": 4})


def test_an_anthropic_message_survives_the_round_trip_through_the_anthropic_provider():
    original = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-6",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": ""},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 50, "cache_read_input_tokens": 10, "output_tokens": 25},
    }

    assert message_from_completion(chat_completion(original, created=1), "claude-sonnet-4-6") == original


# -- stream -----------------------------------------------------------------------


def test_a_stream_is_message_start_blocks_in_order_then_message_delta_and_stop():
    events = translated_events(TOOL_STREAM)

    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    assert events[0][1]["message"]["usage"] == {"input_tokens": 0, "output_tokens": 0}
    assert events[5][1] == {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "call_w1", "name": "get_weather", "input": {}},
    }
    assert events[6][1]["delta"] == {"type": "input_json_delta", "partial_json": '{"ci'}
    assert events[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"input_tokens": 100, "cache_read_input_tokens": 20, "output_tokens": 30},
        "tallyhub": RECEIPT,
    }


def test_each_tool_call_index_gets_its_own_block_and_text_after_a_call_opens_a_new_one():
    events = translated_events(
        [
            chunk(call_fragment(0, '{"city":"A"}', "call_a", "f")),
            chunk(call_fragment(1, '{"city":"B"}', "call_b", "f")),
            chunk({"content": "done"}, finish="tool_calls"),
        ]
    )

    starts = [(d["index"], d["content_block"]["type"]) for n, d in events if n == "content_block_start"]
    stops = [d["index"] for n, d in events if n == "content_block_stop"]
    assert starts == [(0, "tool_use"), (1, "tool_use"), (2, "text")]
    assert stops == [0, 1, 2]


def test_calls_a_relay_numbers_all_zero_are_told_apart_by_their_ids():
    events = translated_events(
        [chunk(call_fragment(0, '{"a":1}', "call_a", "f")), chunk(call_fragment(0, '{"b":2}', "call_b", "g"))]
    )

    blocks = [d["content_block"] for n, d in events if n == "content_block_start"]
    deltas = [(d["index"], d["delta"]["partial_json"]) for n, d in events if n == "content_block_delta"]
    assert [(b["id"], b["name"]) for b in blocks] == [("call_a", "f"), ("call_b", "g")]
    assert deltas == [(0, '{"a":1}'), (1, '{"b":2}')]


def test_reasoning_deltas_become_a_thinking_block_before_the_text():
    events = translated_events([chunk({"reasoning_content": "Let me think"}), chunk({"content": "42"}, "stop")])

    blocks = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
    deltas = [d["delta"] for n, d in events if n == "content_block_delta"]
    assert blocks == ["thinking", "text"]
    assert deltas == [{"type": "thinking_delta", "thinking": "Let me think"}, {"type": "text_delta", "text": "42"}]


def test_finish_without_any_chunk_still_makes_a_whole_message_and_runs_once():
    translator = MessagesStreamTranslator(MODEL)
    assert [name for name, _ in translator.finish()] == ["message_start", "message_delta", "message_stop"]
    assert translator.finish() == [] and translator.feed(chunk({"content": "late"})) == []


def test_an_anthropic_stream_survives_the_round_trip_through_the_anthropic_provider():
    upstream = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "c",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 40, "output_tokens": 1},
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
        },
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"a":'}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "1}"}},
        {"type": "content_block_stop", "index": 1},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 9},
        },
        {"type": "message_stop"},
    ]
    provider = StreamTranslator(created=1)
    openai_chunks = [c for event in upstream for c in provider.take(event)]

    events = translated_events(openai_chunks, model="c")

    expected = [
        (
            "message_start",
            {**upstream[0], "message": {**upstream[0]["message"], "usage": {"input_tokens": 0, "output_tokens": 0}}},
        ),
        *((event["type"], event) for event in upstream[1:8] if event.get("delta", {}).get("text") != ""),
    ]
    assert events[:-2] == expected
    assert events[-2][1]["usage"] == {"input_tokens": 40, "cache_read_input_tokens": 0, "output_tokens": 9}


def test_sse_event_and_error_event_frames():
    assert sse_event(*error_event("upstream broke", "api_error")) == (
        b'event: error\ndata: {"type":"error","error":{"type":"api_error","message":"upstream broke"}}\n\n'
    )


@pytest.mark.parametrize(
    ("status", "type_"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (409, "invalid_request_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
    ],
)
def test_error_bodies_use_anthropics_type_for_the_status(status, type_):
    assert anthropic_error_body(status, "nope") == {"type": "error", "error": {"type": type_, "message": "nope"}}


# -- the official anthropic SDK reads what we produce -------------------------------


Answer = Callable[[dict[str, Any]], httpx2.Response]


def sdk(answer: Answer, seen: list[dict[str, Any]] | None = None) -> anthropic.Anthropic:
    """An SDK client whose POST /v1/messages is translated in, answered by ``answer``."""

    def handle(http_request: httpx2.Request) -> httpx2.Response:
        assert http_request.url.path == "/v1/messages"
        chat = chat_body_from_messages(json.loads(http_request.content))
        if seen is not None:
            seen.append(chat)
        return answer(chat)

    client = httpx2.Client(transport=httpx2.MockTransport(handle))
    return anthropic.Anthropic(api_key="x", base_url="http://tallyhub.test", http_client=client, max_retries=0)


def plain(document: dict[str, Any]) -> Answer:
    return lambda chat: httpx2.Response(200, json=message_from_completion(document, chat["model"]))


def streamed(chunks: list[dict[str, Any]], failure: str | None = None) -> Answer:
    def answer(chat: dict[str, Any]) -> httpx2.Response:
        assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
        translator = MessagesStreamTranslator(chat["model"])
        events = [event for c in chunks for event in translator.feed(c)]
        events += [error_event(failure, "overloaded_error")] if failure else translator.finish()
        body = b"".join(sse_event(name, data) for name, data in events)
        return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})

    return answer


def test_sdk_create_reads_text_tool_use_stop_reason_usage_and_the_charge():
    calls = [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]
    seen: list[dict[str, Any]] = []
    client = sdk(plain(completion({"content": "Checking.", "tool_calls": calls}, "tool_calls")), seen)

    message = client.messages.create(
        model=MODEL, max_tokens=100, tools=[WEATHER], messages=[{"role": "user", "content": "Weather in Paris?"}]
    )

    assert seen[0]["tools"][0]["function"]["name"] == "get_weather" and seen[0]["max_tokens"] == 100
    assert message.id == "msg_chatcmpl-abc" and message.model == MODEL
    assert message.content[0].type == "text" and message.content[0].text == "Checking."
    assert message.content[1].type == "tool_use" and message.content[1].input == {"city": "Paris"}
    assert message.stop_reason == "tool_use"
    usage = message.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens) == (100, 20, 30)
    assert message.to_dict()["tallyhub"]["cost_nanocredits"] == 123000


def test_sdk_stream_final_message_has_text_tool_input_stop_reason_and_real_usage():
    client = sdk(streamed(TOOL_STREAM))

    with client.messages.stream(
        model=MODEL, max_tokens=100, tools=[WEATHER], messages=[{"role": "user", "content": "Weather in Paris?"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()

    assert text == "Let me check."
    assert [block.type for block in final.content] == ["text", "tool_use"]
    assert final.content[0].text == "Let me check."
    assert (final.content[1].id, final.content[1].name, final.content[1].input) == (
        "call_w1",
        "get_weather",
        {"city": "Paris"},
    )
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens, final.usage.output_tokens) == (100, 20, 30)


def test_sdk_raw_stream_events_parse_with_create_stream_true():
    client = sdk(
        streamed(
            [
                chunk({"content": "Hello"}),
                chunk({"content": " there"}, "length"),
                chunk(usage={"prompt_tokens": 7, "completion_tokens": 2}),
            ]
        )
    )

    events = list(
        client.messages.create(model=MODEL, max_tokens=2, stream=True, messages=[{"role": "user", "content": "Hi"}])
    )

    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == "Hello there"
    delta = next(e for e in events if e.type == "message_delta")
    assert delta.delta.stop_reason == "max_tokens" and (delta.usage.input_tokens, delta.usage.output_tokens) == (7, 2)


def test_sdk_raises_an_error_event_sent_mid_stream():
    client = sdk(streamed([chunk({"content": "Hel"})], failure="the provider ended the stream early"))

    with pytest.raises(anthropic.APIStatusError, match="the provider ended the stream early"):
        with client.messages.stream(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "Hi"}]) as stream:
            stream.get_final_message()


@pytest.mark.parametrize(
    ("status", "exception"),
    [
        (400, anthropic.BadRequestError),
        (401, anthropic.AuthenticationError),
        (402, anthropic.APIStatusError),
        (404, anthropic.NotFoundError),
        (429, anthropic.RateLimitError),
        (503, anthropic.InternalServerError),
    ],
)
def test_sdk_raises_its_own_exception_for_our_error_bodies(status, exception):
    client = sdk(
        lambda chat: httpx2.Response(
            status,
            content=orjson.dumps(anthropic_error_body(status, "denied")),
            headers={"content-type": "application/json"},
        )
    )

    with pytest.raises(exception) as caught:
        client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "Hi"}])

    assert caught.value.status_code == status
    assert caught.value.body == anthropic_error_body(status, "denied")
