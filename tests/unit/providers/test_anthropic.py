"""The Anthropic adapter against a fake Anthropic server on loopback (real HTTP, the
Messages API wire format), and the fake against the official ``anthropic`` SDK."""

import asyncio
import base64
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import anthropic
import orjson
import pytest

from adapters.providers import anthropic as anthropic_adapter
from adapters.providers.anthropic import AnthropicProvider, api_url
from adapters.providers.anthropic_response import AnthropicStreamError, StreamTranslator
from adapters.providers.base import DONE, READ_FAILURES
from application.routing import Route
from domain.errors import InvalidRequest, MalformedUpstreamAnswer, UpstreamError
from tests.fakes.anthropic_upstream import (
    DEFAULT_REPLY_TEXT,
    AnthropicScript,
    FakeAnthropicUpstream,
    count_input_tokens,
    reply_tokens,
)

USER = {"role": "user", "content": "Say hello to the nice people"}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "required": ["city"],
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        },
    },
}
WEATHER_ARGUMENTS = {"city": "test", "unit": "c"}  # the fake's placeholder input for WEATHER_TOOL
PIXEL = base64.b64encode(b"\x89PNG\r\n\x1a\n fake png bytes").decode()
REPLY_TOKENS = len(reply_tokens(DEFAULT_REPLY_TEXT))


@pytest.fixture(scope="module")
def upstream():
    with FakeAnthropicUpstream() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(upstream):
    upstream.reset()


def route(base_url: str, secret: str | None) -> Route:
    return Route(
        model="claude/claude-sonnet-4-6",
        provider="claude",
        kind="anthropic",
        base_url=base_url,
        region=None,
        upstream_model="claude-sonnet-4-6",
        credential_id="cred-1",
        secret=secret,
    )


def run(action: Callable[[AnthropicProvider], Awaitable[Any]], timeout: float = 5) -> Any:
    async def main() -> Any:
        async with aiohttp.ClientSession() as session:
            return await action(AnthropicProvider(session, timeout_seconds=timeout))

    return asyncio.run(main())


def complete(upstream: FakeAnthropicUpstream, body: dict[str, Any], *, secret: str | None = None) -> dict[str, Any]:
    async def action(provider: AnthropicProvider) -> dict[str, Any]:
        exchange = await provider.start_chat(route(upstream.base_url, secret or upstream.api_key), body)
        try:
            return orjson.loads(await exchange.read_completion())
        finally:
            exchange.release()

    return run(action)


def stream(upstream: FakeAnthropicUpstream, body: dict[str, Any]) -> tuple[list[bytes], BaseException | None]:
    """Every payload the exchange yielded, and what reading it raised (None when it ended cleanly)."""

    async def action(provider: AnthropicProvider) -> tuple[list[bytes], BaseException | None]:
        exchange = await provider.start_chat(route(upstream.base_url, upstream.api_key), {**body, "stream": True})
        payloads: list[bytes] = []
        try:
            async for data in exchange.stream_data():
                payloads.append(data)
        except READ_FAILURES as exc:
            return payloads, exc
        finally:
            exchange.release()
        return payloads, None

    return run(action)


def chunks(payloads: list[bytes]) -> list[dict[str, Any]]:
    return [orjson.loads(p) for p in payloads if p != DONE]


def deltas(payloads: list[bytes]) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in chunks(payloads) if c["choices"]]


def streamed_text(payloads: list[bytes]) -> str:
    return "".join(d.get("content") or "" for d in deltas(payloads))


def sent(upstream: FakeAnthropicUpstream) -> dict[str, Any]:
    """The Messages API body of the only request the fake received."""
    assert len(upstream.requests) == 1
    return upstream.requests[0].json


def start_error(upstream: FakeAnthropicUpstream, body: dict[str, Any], **kwargs: Any) -> BaseException:
    with pytest.raises((UpstreamError, InvalidRequest)) as caught:
        complete(upstream, body, **kwargs)
    return caught.value


# -- plain answers -------------------------------------------------------------------


def test_plain_answer_is_a_chat_completion_with_the_providers_usage(upstream):
    answer = complete(upstream, {"model": "claude/claude-sonnet-4-6", "messages": [USER]})

    assert answer["object"] == "chat.completion"
    assert answer["model"] == "claude-sonnet-4-6"
    message = {"role": "assistant", "content": DEFAULT_REPLY_TEXT, "refusal": None}
    assert answer["choices"] == [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}]
    prompt = count_input_tokens(sent(upstream))
    assert prompt == len(USER["content"]) // 4 + 1
    assert answer["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": REPLY_TOKENS,
        "total_tokens": prompt + REPLY_TOKENS,
        "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def test_request_goes_to_v1_messages_with_key_version_model_and_default_max_tokens(upstream):
    complete(upstream, {"model": "claude/claude-sonnet-4-6", "messages": [USER]})

    request = upstream.requests[0]
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert request.headers["x-api-key"] == upstream.api_key
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers
    assert request.json == {"model": "claude-sonnet-4-6", "max_tokens": 4096, "messages": [USER]}


def test_base_url_defaults_to_anthropic_and_may_end_in_v1():
    assert api_url(None, "/messages") == "https://api.anthropic.com/v1/messages"
    assert api_url("http://127.0.0.1:9/", "/messages") == "http://127.0.0.1:9/v1/messages"
    assert api_url("https://proxy.example/anthropic/v1", "/messages") == "https://proxy.example/anthropic/v1/messages"


def test_system_and_developer_messages_become_the_top_level_system(upstream):
    complete(upstream, {"model": "m", "messages": [{"role": "system", "content": "You are terse."}, USER]})
    assert sent(upstream)["system"] == "You are terse."
    assert sent(upstream)["messages"] == [USER]

    upstream.reset()
    complete(
        upstream,
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "Rule one."}]},
                USER,
                {"role": "assistant", "content": "Hello."},
                {"role": "developer", "content": "Rule two."},
                {"role": "user", "content": "Again"},
            ],
        },
    )
    assert sent(upstream)["system"] == [{"type": "text", "text": "Rule one."}, {"type": "text", "text": "Rule two."}]
    assert [m["role"] for m in sent(upstream)["messages"]] == ["user", "assistant", "user"]


def test_consecutive_turns_of_one_role_are_merged_to_alternate(upstream):
    please = {"role": "user", "content": [{"type": "text", "text": "Please."}]}
    complete(upstream, {"model": "m", "messages": [USER, please]})
    assert sent(upstream)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": USER["content"]}, {"type": "text", "text": "Please."}]}
    ]


def test_openai_only_fields_are_dropped_and_user_becomes_metadata(upstream):
    # The fake refuses unknown fields ("Extra inputs are not permitted"), as Anthropic does.
    body = {
        "model": "m",
        "messages": [USER],
        "frequency_penalty": 0.5,
        "presence_penalty": 0.1,
        "seed": 7,
        "logit_bias": {"1": 2},
        "store": True,
        "metadata": {"team": "a"},
        "service_tier": "auto",
        "stream_options": {"include_usage": True},
        "user": "end-user-1",
        "temperature": 0.3,
        "top_p": 0.9,
        "n": 1,
        "logprobs": False,
    }
    complete(upstream, body)
    assert sent(upstream) == {
        "model": "claude-sonnet-4-6",
        "max_tokens": 4096,
        "messages": [USER],
        "temperature": 0.3,
        "top_p": 0.9,
        "metadata": {"user_id": "end-user-1"},
    }


def test_images_by_data_url_and_by_https_url(upstream):
    content = [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]
    answer = complete(upstream, {"model": "m", "messages": [{"role": "user", "content": content}]})

    assert sent(upstream)["messages"][0]["content"] == [
        {"type": "text", "text": "What is in these?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]
    assert answer["usage"]["prompt_tokens"] == len("What is in these?") // 4 + 1 + 2 * 100


def test_an_image_type_anthropic_cannot_read_is_refused_before_sending(upstream):
    part = {"type": "image_url", "image_url": {"url": f"data:image/bmp;base64,{PIXEL}"}}
    error = start_error(upstream, {"model": "m", "messages": [{"role": "user", "content": [part]}]})
    assert isinstance(error, InvalidRequest) and error.param == "messages.0.content.0.image_url.url"
    assert upstream.requests == []


# -- tools ---------------------------------------------------------------------------


def test_tool_definitions_calls_and_results_are_translated(upstream):
    messages = [
        {"role": "system", "content": "Use tools."},
        USER,
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
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "25C"}]},
        {"role": "user", "content": "Which is warmer?"},
    ]
    answer = complete(
        upstream,
        {
            "model": "m",
            "messages": messages,
            "tools": [WEATHER_TOOL],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": False,
        },
    )

    body = sent(upstream)
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather in a city",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        }
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}
    assert body["messages"] == [
        USER,
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "25C"}]},
                {"type": "text", "text": "Which is warmer?"},
            ],
        },
    ]
    # The last user turn answers the tools, so the model replies in text.
    assert answer["choices"][0]["message"]["content"] == DEFAULT_REPLY_TEXT


def test_a_tool_use_answer_becomes_openai_tool_calls(upstream):
    answer = complete(upstream, {"model": "m", "messages": [USER], "tools": [WEATHER_TOOL]})

    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Calling get_weather."
    [call] = choice["message"]["tool_calls"]
    assert call["id"].startswith("toolu_") and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == WEATHER_ARGUMENTS


def test_a_streamed_tool_use_becomes_tool_call_deltas(upstream):
    body = {"model": "m", "messages": [USER], "tools": [WEATHER_TOOL], "tool_choice": "required"}
    payloads, error = stream(upstream, body)

    assert error is None and payloads[-1] == DONE
    assert sent(upstream)["tool_choice"] == {"type": "any"}
    calls = [d["tool_calls"][0] for d in deltas(payloads) if "tool_calls" in d]
    assert calls[0]["index"] == 0 and calls[0]["id"].startswith("toolu_") and calls[0]["type"] == "function"
    assert calls[0]["function"] == {"name": "get_weather", "arguments": ""}
    fragments = [c["function"]["arguments"] for c in calls[1:]]
    assert all(fragments) and all(c["index"] == 0 and "id" not in c for c in calls[1:])
    assert orjson.loads("".join(fragments)) == WEATHER_ARGUMENTS
    assert streamed_text(payloads) == ""  # a forced tool call comes without text
    assert [c["choices"][0]["finish_reason"] for c in chunks(payloads) if c["choices"]][-1] == "tool_calls"


@pytest.mark.parametrize(
    ("tool_choice", "expected", "calls_tool"),
    [
        ("auto", {"type": "auto"}, True),
        ("none", {"type": "none"}, False),
        ("required", {"type": "any"}, True),
        ({"type": "function", "function": {"name": "get_weather"}}, {"type": "tool", "name": "get_weather"}, True),
    ],
)
def test_tool_choice_is_translated(upstream, tool_choice, expected, calls_tool):
    answer = complete(upstream, {"model": "m", "messages": [USER], "tools": [WEATHER_TOOL], "tool_choice": tool_choice})
    assert sent(upstream)["tool_choice"] == expected
    assert ("tool_calls" in answer["choices"][0]["message"]) is calls_tool


def test_tool_call_arguments_that_are_not_a_json_object_are_refused_before_sending(upstream):
    call = {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{city: Paris"}}
    messages = [
        USER,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
    ]
    error = start_error(upstream, {"model": "m", "messages": messages, "tools": [WEATHER_TOOL]})
    assert isinstance(error, InvalidRequest) and error.param == "messages.1.tool_calls.0.function.arguments"
    assert upstream.requests == []


# -- streams -------------------------------------------------------------------------


def test_stream_is_role_then_content_then_finish_then_usage_then_done(upstream):
    payloads, error = stream(upstream, {"model": "m", "messages": [USER]})

    assert error is None
    assert payloads[-1] == DONE and payloads.count(DONE) == 1
    parts = chunks(payloads)
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == parts[0]["id"] for c in parts)
    assert parts[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text_chunks = [c["choices"][0]["delta"]["content"] for c in parts[1:-2]]
    assert text_chunks == reply_tokens(DEFAULT_REPLY_TEXT)
    assert parts[-2]["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
    assert all(c["choices"][0]["finish_reason"] is None for c in parts[:-2])
    prompt = len(USER["content"]) // 4 + 1
    assert parts[-1]["choices"] == []
    assert parts[-1]["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": REPLY_TOKENS,
        "total_tokens": prompt + REPLY_TOKENS,
        "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    assert sent(upstream)["stream"] is True


def test_a_stream_broken_off_raises_a_read_failure_and_never_ends_with_done(upstream):
    upstream.script(AnthropicScript.break_after_events(5))  # message_start, block start, ping, two deltas
    payloads, error = stream(upstream, {"model": "m", "messages": [USER]})

    assert isinstance(error, READ_FAILURES)
    assert DONE not in payloads
    assert streamed_text(payloads) == "".join(reply_tokens(DEFAULT_REPLY_TEXT)[:2])


def test_an_error_event_mid_stream_raises_a_read_failure(upstream):
    upstream.script(AnthropicScript.error_event(after=4, type="overloaded_error", message="Overloaded"))
    payloads, error = stream(upstream, {"model": "m", "messages": [USER]})

    assert isinstance(error, AnthropicStreamError) and isinstance(error, READ_FAILURES)
    assert error.error_type == "overloaded_error"
    assert DONE not in payloads and streamed_text(payloads) == reply_tokens(DEFAULT_REPLY_TEXT)[0]


def test_a_stream_that_ends_without_message_stop_raises_a_read_failure(upstream):
    upstream.script(AnthropicScript.end_after_events(9))  # everything up to message_delta, then a clean end
    payloads, error = stream(upstream, {"model": "m", "messages": [USER]})

    assert isinstance(error, MalformedUpstreamAnswer)
    assert DONE not in payloads and streamed_text(payloads) == DEFAULT_REPLY_TEXT
    assert all(c["choices"] for c in chunks(payloads))  # no usage chunk, no finish chunk


def test_usage_comes_from_message_start_input_and_message_delta_output():
    translator = StreamTranslator(created=1)
    events = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "model": "claude",
                "usage": {
                    "input_tokens": 10,
                    "cache_read_input_tokens": 30,
                    "cache_creation_input_tokens": 5,
                    "output_tokens": 1,
                },
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}},
        {"type": "message_stop"},
    ]
    produced = [chunk for event in events for chunk in translator.take(event)]
    assert translator.finished
    assert produced[-1]["usage"]["prompt_tokens"] == 45
    # no cache_creation object: the write total alone (priced as 5-minute writes, flagged)
    assert produced[-1]["usage"]["prompt_tokens_details"] == {"cached_tokens": 30, "cache_write_tokens": 5}
    assert produced[-1]["usage"]["completion_tokens"] == 7


def test_parallel_tool_uses_get_their_own_tool_call_indexes():
    translator = StreamTranslator(created=1)
    events = [
        {"type": "message_start", "message": {"id": "msg_1", "model": "claude", "usage": {"input_tokens": 3}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Both."}},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_a", "name": "f"},
        },
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {"type": "tool_use", "id": "toolu_b", "name": "g"},
        },
        {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{}"}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{}"}},
    ]
    calls = [
        chunk["choices"][0]["delta"]["tool_calls"][0]
        for event in events
        for chunk in translator.take(event)
        if "tool_calls" in chunk["choices"][0]["delta"]
    ]
    assert [(c["index"], c.get("id")) for c in calls] == [(0, "toolu_a"), (1, "toolu_b"), (1, None), (0, None)]


@pytest.mark.parametrize(
    "event",
    [
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "Hi"},
        },  # before message_start
        {"type": "message_start"},  # malformed
        ["not", "an", "event"],
    ],
)
def test_an_event_out_of_order_or_malformed_is_a_read_failure(event):
    with pytest.raises(MalformedUpstreamAnswer):
        StreamTranslator(created=1).take(event)


# -- stop reasons, limits and usage --------------------------------------------------


def test_max_tokens_cuts_the_answer_and_finishes_with_length(upstream):
    answer = complete(upstream, {"model": "m", "messages": [USER], "max_tokens": 9, "max_completion_tokens": 2})

    assert sent(upstream)["max_tokens"] == 2
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["choices"][0]["message"]["content"] == "".join(reply_tokens(DEFAULT_REPLY_TEXT)[:2])
    assert answer["usage"]["completion_tokens"] == 2

    upstream.reset()
    payloads, _ = stream(upstream, {"model": "m", "messages": [USER], "max_tokens": 2})
    assert [c["choices"][0]["finish_reason"] for c in chunks(payloads) if c["choices"]][-1] == "length"


@pytest.mark.parametrize("stop", ["fake", ["nowhere", "fake"]])
def test_stop_sequences_end_the_answer_with_stop(upstream, stop):
    answer = complete(upstream, {"model": "m", "messages": [USER], "stop": stop})

    assert sent(upstream)["stop_sequences"] == ([stop] if isinstance(stop, str) else stop)
    assert answer["choices"][0]["message"]["content"] == "Hello from "
    assert answer["choices"][0]["finish_reason"] == "stop"


def test_cache_reads_and_writes_count_as_prompt_and_reads_as_cached(upstream):
    upstream.script(
        AnthropicScript.usage(input_tokens=5, cache_read_input_tokens=100, cache_creation_input_tokens=20),
        AnthropicScript.usage(input_tokens=5, cache_read_input_tokens=100, cache_creation_input_tokens=20),
    )
    plain = complete(upstream, {"model": "m", "messages": [USER]})["usage"]
    payloads, _ = stream(upstream, {"model": "m", "messages": [USER]})
    streamed = chunks(payloads)[-1]["usage"]

    for usage in (plain, streamed):
        assert usage["prompt_tokens"] == 125
        assert usage["prompt_tokens_details"] == {
            "cached_tokens": 100,
            "cache_write_tokens": 20,
            "cache_write_5m_tokens": 20,
            "cache_write_1h_tokens": 0,
        }
        assert usage["completion_tokens"] == REPLY_TOKENS
        assert usage["total_tokens"] == 125 + REPLY_TOKENS


def test_thinking_passes_through_and_comes_back_as_reasoning_content(upstream):
    body = {"model": "m", "messages": [USER], "thinking": {"type": "enabled", "budget_tokens": 1024}}
    answer = complete(upstream, body)
    assert sent(upstream)["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert answer["choices"][0]["message"]["reasoning_content"] == "Let me think."
    assert answer["choices"][0]["message"]["content"] == DEFAULT_REPLY_TEXT

    payloads, _ = stream(upstream, body)
    assert "".join(d.get("reasoning_content") or "" for d in deltas(payloads)) == "Let me think."
    assert streamed_text(payloads) == DEFAULT_REPLY_TEXT


def test_a_json_schema_response_format_becomes_output_config(upstream):
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    answer = complete(upstream, {"model": "m", "messages": [USER], "response_format": response_format})
    assert sent(upstream)["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert orjson.loads(answer["choices"][0]["message"]["content"]) == {"answer": "test"}


# -- what cannot be expressed --------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"temperature": 1.5}, "temperature"),
        ({"functions": [{"name": "f", "parameters": {}}]}, "functions"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools.0.type"),
    ],
)
def test_what_the_messages_api_cannot_express_is_refused_before_sending(upstream, extra, param):
    error = start_error(upstream, {"model": "m", "messages": [USER], **extra})
    assert isinstance(error, InvalidRequest) and error.param == param
    assert upstream.requests == []


# -- errors before the first byte ----------------------------------------------------


def test_a_provider_400_is_a_400_with_the_providers_message(upstream):
    error = start_error(upstream, {"model": "m", "messages": [USER], "top_p": 5})
    assert isinstance(error, UpstreamError) and error.status == 400
    assert "top_p: Input should be less than or equal to 1" in str(error)


@pytest.mark.parametrize(
    ("script", "status", "code", "retry_after"),
    [
        (AnthropicScript.error(400, "messages.0.content: bad block"), 400, "upstream_rejected_request", None),
        (AnthropicScript.error(413, "Request exceeds the maximum size"), 413, "upstream_rejected_request", None),
        (AnthropicScript.error(401, "invalid x-api-key"), 502, "upstream_auth_failed", None),
        (AnthropicScript.error(403, "Your API key does not have permission"), 502, "upstream_auth_failed", None),
        (
            AnthropicScript.error(429, "Number of requests has exceeded your rate limit", retry_after=7),
            429,
            "upstream_rate_limited",
            "7",
        ),
        (AnthropicScript.error(529, "Overloaded", retry_after=3), 503, "upstream_overloaded", "3"),
        (AnthropicScript.error(529, "Overloaded"), 503, "upstream_overloaded", None),
        (AnthropicScript.error(500, "Internal server error"), 502, "upstream_error", None),
        (AnthropicScript.raw(502, "<html>Bad gateway</html>"), 502, "upstream_error", None),
    ],
)
def test_provider_errors_map_to_honest_statuses(upstream, script, status, code, retry_after):
    upstream.script(script)
    error = start_error(upstream, {"model": "m", "messages": [USER]})
    assert isinstance(error, UpstreamError)
    assert (error.status, error.code, error.retry_after) == (status, code, retry_after)
    if status in (400, 413):
        assert script.error_message in str(error)


def test_a_refused_credential_is_a_502_that_never_shows_the_secret(upstream):
    secret = "sk-ant-wrong-secret-9876"
    error = start_error(upstream, {"model": "m", "messages": [USER]}, secret=secret)
    assert isinstance(error, UpstreamError) and (error.status, error.code) == (502, "upstream_auth_failed")
    assert secret not in str(error)


def test_a_slow_provider_is_a_504(upstream):
    upstream.script(AnthropicScript.delay(1.0))

    async def action(provider: AnthropicProvider) -> None:
        await provider.start_chat(route(upstream.base_url, upstream.api_key), {"model": "m", "messages": [USER]})

    with pytest.raises(UpstreamError) as caught:
        run(action, timeout=0.2)
    assert (caught.value.status, caught.value.code) == (504, "upstream_timeout")


def test_an_unreachable_provider_is_a_502():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    async def action(provider: AnthropicProvider) -> None:
        await provider.start_chat(route(f"http://127.0.0.1:{closed_port}", "k"), {"model": "m", "messages": [USER]})

    with pytest.raises(UpstreamError) as caught:
        run(action)
    assert (caught.value.status, caught.value.code) == (502, "upstream_unavailable")


def test_probe_tells_an_accepted_credential_from_a_refused_one(upstream):
    assert run(lambda provider: provider.probe(route(upstream.base_url, upstream.api_key))) is True
    assert run(lambda provider: provider.probe(route(upstream.base_url, "sk-ant-revoked-0000"))) is False


# -- the fake speaks the real wire format --------------------------------------------


def test_the_official_sdk_reads_the_fakes_plain_and_streamed_answers(upstream):
    with anthropic.Anthropic(base_url=upstream.base_url, api_key=upstream.api_key, max_retries=0, timeout=5) as client:
        message = client.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=[USER])
        assert message.content[0].text == DEFAULT_REPLY_TEXT
        assert message.stop_reason == "end_turn" and message.usage.output_tokens == REPLY_TOKENS

        tool = {"name": "get_weather", "input_schema": WEATHER_TOOL["function"]["parameters"]}
        with client.messages.stream(model="claude-sonnet-4-6", max_tokens=64, messages=[USER], tools=[tool]) as events:
            text = "".join(events.text_stream)
            final = events.get_final_message()
        assert text == "Calling get_weather."
        assert final.stop_reason == "tool_use" and final.content[1].input == WEATHER_ARGUMENTS

        raw = client.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=[USER], stream=True)
        assert [event.type for event in raw][:2] == ["message_start", "content_block_start"]

        upstream.script(AnthropicScript.error(529, "Overloaded"))
        with pytest.raises(anthropic.OverloadedError):
            client.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=[USER])

        upstream.script(AnthropicScript.error_event(after=3))
        with pytest.raises(anthropic.APIStatusError):
            list(client.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=[USER], stream=True))


# -- garbled answers and bugs of ours ---------------------------------------------------------


def _a_bug(*args: Any, **kwargs: Any) -> Any:
    raise KeyError("a bug in our translation")


@pytest.mark.parametrize(
    "body", ["<html>oops</html>", '"a string"', '{"type": "message", "content": "not blocks"}', '{"type": "error"}']
)
def test_a_plain_answer_the_provider_garbled_is_a_malformed_answer(upstream, body):
    upstream.script(AnthropicScript.raw(200, body))
    with pytest.raises(MalformedUpstreamAnswer):
        complete(upstream, {"model": "m", "messages": [USER]})


def test_a_bug_in_our_translation_of_a_plain_answer_is_no_read_failure(upstream, monkeypatch):
    monkeypatch.setattr(anthropic_adapter, "chat_completion", _a_bug)
    with pytest.raises(KeyError) as raised:
        complete(upstream, {"model": "m", "messages": [USER]})
    assert not isinstance(raised.value, READ_FAILURES)


def test_a_bug_in_our_stream_translation_propagates_instead_of_a_broken_stream(upstream, monkeypatch):
    monkeypatch.setattr(StreamTranslator, "_chunk", _a_bug)
    with pytest.raises(KeyError):  # stream() returns read failures; a bug propagates
        stream(upstream, {"model": "m", "messages": [USER]})


@pytest.mark.parametrize(
    "event",
    [
        {"type": "content_block_start", "index": 0},
        {"type": "content_block_start", "index": [0], "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": "not an object"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta"}},
        {"type": "message_delta", "delta": {}, "usage": ["not", "an", "object"]},
    ],
)
def test_a_garbled_event_after_message_start_is_a_malformed_answer(event):
    translator = StreamTranslator(created=1)
    translator.take({"type": "message_start", "message": {"id": "msg_1", "model": "m"}})
    with pytest.raises(MalformedUpstreamAnswer):
        translator.take(event)
