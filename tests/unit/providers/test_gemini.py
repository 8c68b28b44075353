"""The Gemini adapter speaks OpenAI to the gateway and Gemini's real wire format upstream
(real HTTP to the fake Gemini server on 127.0.0.1)."""

import asyncio
import base64
import math
import struct
from typing import Any

import aiohttp
import orjson
import pytest

from adapters.providers import gemini
from adapters.providers.base import DONE, READ_FAILURES
from adapters.providers.gemini import GeminiProvider
from adapters.providers.gemini_response import ChunkTranslator, finish_reason
from application.routing import Route
from domain.errors import InvalidRequest, MalformedUpstreamAnswer, UpstreamError
from tests.fakes.gemini_upstream import (
    DEFAULT_REPLY_TEXT,
    FakeGeminiUpstream,
    GeminiScript,
    embedding_vector,
)

MODEL = "gemini-2.5-flash"
USER = [{"role": "user", "content": "Say hello to the nice people"}]  # 28 chars → 7 prompt tokens
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"city": {"type": "string"}, "unit": {"type": ["string", "null"], "enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}
PIXEL = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()


@pytest.fixture(scope="module")
def upstream():
    with FakeGeminiUpstream() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(upstream):
    upstream.reset()


def route_to(
    upstream: FakeGeminiUpstream, *, model: str = MODEL, secret: Any = "default", base_url: str | None = None
) -> Route:
    return Route(
        model=f"google/{model}",
        provider="google",
        kind="gemini",
        region=None,
        base_url=base_url or upstream.base_url,
        upstream_model=model,
        credential_id="cred-1",
        secret=upstream.api_key if secret == "default" else secret,
    )


async def _call(action, timeout: float = 5.0):
    async with aiohttp.ClientSession() as session:
        return await action(GeminiProvider(session, timeout_seconds=timeout))


def chat(route: Route, body: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    async def action(provider: GeminiProvider) -> dict[str, Any]:
        exchange = await provider.start_chat(route, body)
        try:
            return orjson.loads(await exchange.read_completion())
        finally:
            exchange.release()

    return asyncio.run(_call(action, timeout))


def stream(route: Route, body: dict[str, Any]) -> tuple[list[bytes], BaseException | None]:
    """Every payload the exchange yields, and what reading it raised (if anything)."""

    async def action(provider: GeminiProvider) -> tuple[list[bytes], BaseException | None]:
        exchange = await provider.start_chat(route, {**body, "stream": True, "stream_options": {"include_usage": True}})
        payloads: list[bytes] = []
        try:
            async for data in exchange.stream_data():
                payloads.append(data)
        except READ_FAILURES as exc:
            return payloads, exc
        finally:
            exchange.release()
        return payloads, None

    return asyncio.run(_call(action))


def chunks_of(payloads: list[bytes]) -> list[dict[str, Any]]:
    return [orjson.loads(p) for p in payloads if p != DONE]


def embed(route: Route, body: dict[str, Any]) -> dict[str, Any]:
    async def action(provider: GeminiProvider) -> dict[str, Any]:
        return orjson.loads(await provider.embed(route, body))

    return asyncio.run(_call(action))


def sent(upstream: FakeGeminiUpstream, index: int = -1) -> dict[str, Any]:
    return upstream.requests[index].json


# ---------------------------------------------------------------- plain and streamed text


def test_plain_answer_is_an_openai_completion_with_geminis_usage(upstream):
    answer = chat(route_to(upstream), {"model": "google/gemini", "messages": USER})
    assert answer["object"] == "chat.completion"
    assert answer["model"] == MODEL
    assert answer["choices"] == [
        {
            "index": 0,
            "logprobs": None,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": DEFAULT_REPLY_TEXT, "refusal": None},
        }
    ]
    assert answer["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 4,
        "total_tokens": 11,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    request = upstream.requests[0]
    assert request.path == f"/v1beta/models/{MODEL}:generateContent"
    assert request.headers["x-goog-api-key"] == upstream.api_key
    assert "key" not in request.query  # the key never travels in a URL
    assert request.json == {"contents": [{"role": "user", "parts": [{"text": "Say hello to the nice people"}]}]}


def test_stream_is_role_chunk_deltas_finish_one_usage_chunk_then_done(upstream):
    payloads, failure = stream(route_to(upstream), {"messages": USER})
    assert failure is None
    assert payloads[-1] == DONE
    chunks = chunks_of(payloads)
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"].get("content") for c in chunks[1:-2]]
    assert deltas == ["Hello", " from", " fake", " Gemini"]
    assert chunks[-2]["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 4,
        "total_tokens": 11,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    assert all("usage" not in c for c in chunks[:-1])
    request = upstream.requests[0]
    assert request.path == f"/v1beta/models/{MODEL}:streamGenerateContent" and request.query == {"alt": "sse"}


def test_system_and_developer_messages_become_the_system_instruction_and_roles_alternate(upstream):
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Again"},
        {"role": "user", "content": [{"type": "text", "text": "please"}]},
    ]
    chat(route_to(upstream), {"messages": messages})
    assert sent(upstream) == {
        "systemInstruction": {"parts": [{"text": "You are terse."}, {"text": "Answer in English."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "Hi"}]},
            {"role": "model", "parts": [{"text": "Hello!"}]},
            {"role": "user", "parts": [{"text": "Again"}, {"text": "please"}]},
        ],
    }


def test_generation_options_become_generation_config(upstream):
    answer = chat(
        route_to(upstream),
        {"messages": USER, "max_tokens": 3, "max_completion_tokens": 2, "temperature": 0.2, "top_p": 0.9, "seed": 7},
    )
    assert sent(upstream)["generationConfig"] == {"maxOutputTokens": 2, "temperature": 0.2, "topP": 0.9, "seed": 7}
    assert answer["choices"][0]["message"]["content"] == "Hello from"
    assert answer["choices"][0]["finish_reason"] == "length"
    stopped = chat(route_to(upstream), {"messages": USER, "stop": ["fake", "nothing"]})
    assert sent(upstream)["generationConfig"] == {"stopSequences": ["fake", "nothing"]}
    assert stopped["choices"][0]["message"]["content"] == "Hello from "
    assert stopped["choices"][0]["finish_reason"] == "stop"


def test_json_schema_response_format_becomes_response_schema(upstream):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    answer = chat(
        route_to(upstream),
        {
            "messages": USER,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "place", "strict": True, "schema": schema},
            },
        },
    )
    assert sent(upstream)["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseSchema": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]},
    }
    assert orjson.loads(answer["choices"][0]["message"]["content"]) == {"city": "example"}


# ---------------------------------------------------------------- tools


def test_tool_call_round_trip_carries_name_arguments_and_thought_signature(upstream):
    upstream.require_thought_signatures = True  # as Gemini 3 checks
    first = chat(route_to(upstream), {"messages": USER, "tools": [WEATHER_TOOL]})
    declaration = sent(upstream)["tools"][0]["functionDeclarations"][0]
    assert declaration == {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {
            "type": "OBJECT",
            "required": ["city"],
            "properties": {
                "city": {"type": "STRING"},
                "unit": {"type": "STRING", "nullable": True, "enum": ["c", "f"]},
            },
        },
    }
    choice = first["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": '{"city":"example"}'}
    signature = call["extra_content"]["google"]["thought_signature"]

    history = USER + [choice["message"], {"role": "tool", "tool_call_id": call["id"], "content": '{"temp": 21}'}]
    second = chat(route_to(upstream), {"messages": history, "tools": [WEATHER_TOOL]})
    assert sent(upstream)["contents"][1:] == [
        {
            "role": "model",
            "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "example"}}, "thoughtSignature": signature}
            ],
        },
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": 21}}}]},
    ]
    assert second["choices"][0]["message"]["content"] == 'Tool results: get_weather={"temp":21}'
    assert second["choices"][0]["finish_reason"] == "stop"


def test_replayed_tool_call_without_signature_gets_googles_documented_bypass(upstream):
    upstream.require_thought_signatures = True
    history = USER + [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_b", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_a", "content": "rain"},
    ]
    answer = chat(route_to(upstream), {"messages": history, "tools": [WEATHER_TOOL]})
    model_turn, results = sent(upstream)["contents"][1:]
    assert model_turn["parts"][0]["thoughtSignature"] == "skip_thought_signature_validator"
    assert "thoughtSignature" not in model_turn["parts"][1]
    assert results == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"output": "sunny"}}},
            {"functionResponse": {"name": "get_weather", "response": {"output": "rain"}}},
        ],
    }
    assert answer["choices"][0]["message"]["content"].startswith("Tool results: get_weather=")


def test_streamed_tool_call_round_trip(upstream):
    payloads, failure = stream(route_to(upstream), {"messages": USER, "tools": [WEATHER_TOOL]})
    assert failure is None and payloads[-1] == DONE
    chunks = chunks_of(payloads)
    (call,) = chunks[1]["choices"][0]["delta"]["tool_calls"]
    assert call["index"] == 0 and call["id"].startswith("call_")
    assert call["function"] == {"name": "get_weather", "arguments": '{"city":"example"}'}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"]["completion_tokens"] == math.ceil(len('{"city":"example"}') / 4)

    message = {"role": "assistant", "content": None, "tool_calls": [{k: v for k, v in call.items() if k != "index"}]}
    history = USER + [message, {"role": "tool", "tool_call_id": call["id"], "content": "12 degrees"}]
    payloads, failure = stream(route_to(upstream), {"messages": history, "tools": [WEATHER_TOOL]})
    assert failure is None
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks_of(payloads) if c["choices"])
    assert text == 'Tool results: get_weather={"output":"12 degrees"}'


@pytest.mark.parametrize(
    ("tool_choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
    ],
)
def test_tool_choice_becomes_function_calling_config(upstream, tool_choice, config):
    answer = chat(route_to(upstream), {"messages": USER, "tools": [WEATHER_TOOL], "tool_choice": tool_choice})
    assert sent(upstream)["toolConfig"] == {"functionCallingConfig": config}
    called = answer["choices"][0]["message"].get("tool_calls")
    assert bool(called) == (tool_choice != "none")


def test_tool_result_for_an_unknown_call_id_is_refused_before_sending(upstream):
    history = USER + [{"role": "tool", "tool_call_id": "call_nowhere", "content": "x"}]
    with pytest.raises(InvalidRequest, match="call_nowhere"):
        chat(route_to(upstream), {"messages": history})
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("schema", "keyword"),
    [
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}, "$defs": {"A": {"type": "string"}}}, "$"),
        ({"type": "object", "properties": {"a": {"oneOf": [{"type": "string"}, {"type": "integer"}]}}}, "oneOf"),
        (
            {"type": "object", "properties": {"a": {"type": "object", "additionalProperties": {"type": "string"}}}},
            "additionalProperties",
        ),
        ({"type": "object", "properties": {"a": {"type": ["string", "integer"]}}}, "type"),
        ({"type": "object", "properties": {"a": {"type": "integer", "enum": [1, 2]}}}, "enum"),
    ],
)
def test_schema_gemini_cannot_express_is_refused_naming_the_tool(upstream, schema, keyword):
    tool = {"type": "function", "function": {"name": "lookup", "parameters": schema}}
    with pytest.raises(InvalidRequest, match="lookup") as raised:
        chat(route_to(upstream), {"messages": USER, "tools": [tool]})
    assert keyword in str(raised.value)
    assert raised.value.param == "tools.0"
    assert upstream.requests == []


def test_response_format_schema_gemini_cannot_express_is_refused(upstream):
    schema = {"type": "object", "properties": {"a": {"allOf": [{"type": "string"}]}}}
    with pytest.raises(InvalidRequest, match="allOf") as raised:
        chat(
            route_to(upstream),
            {
                "messages": USER,
                "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
            },
        )
    assert raised.value.param == "response_format"
    assert upstream.requests == []


@pytest.mark.parametrize(
    "field",
    [{"logit_bias": {"50256": -100}}, {"logprobs": True}, {"parallel_tool_calls": False}, {"reasoning_effort": "max"}],
)
def test_options_gemini_cannot_honour_are_refused_before_sending(upstream, field):
    with pytest.raises(InvalidRequest):
        chat(route_to(upstream), {"messages": USER, **field})
    assert upstream.requests == []


# ---------------------------------------------------------------- images


def test_data_url_image_is_sent_inline(upstream):
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
    ]
    answer = chat(route_to(upstream), {"messages": [{"role": "user", "content": content}]})
    assert sent(upstream)["contents"][0]["parts"] == [
        {"text": "What is this?"},
        {"inlineData": {"mimeType": "image/png", "data": PIXEL}},
    ]
    assert answer["usage"]["prompt_tokens"] == math.ceil(len("What is this?") / 4) + 258


def test_http_image_url_is_refused_before_anything_is_sent(upstream):
    content = [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    with pytest.raises(InvalidRequest, match="data: URL") as raised:
        chat(route_to(upstream), {"messages": [{"role": "user", "content": content}]})
    assert raised.value.param == "messages.0.content.0"
    assert upstream.requests == []


# ---------------------------------------------------------------- finish reasons, choices, usage


@pytest.mark.parametrize(
    ("gemini", "openai"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("OTHER", "stop"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
    ],
)
def test_finish_reason_mapping(gemini, openai):
    assert finish_reason(gemini, called_tools=False) == openai


@pytest.mark.parametrize(
    ("reason", "expected"), [("SAFETY", "content_filter"), ("RECITATION", "content_filter"), ("MAX_TOKENS", "length")]
)
def test_finish_reason_from_the_wire_plain_and_streamed(upstream, reason, expected):
    upstream.script(GeminiScript.finish(reason), GeminiScript.finish(reason))
    assert chat(route_to(upstream), {"messages": USER})["choices"][0]["finish_reason"] == expected
    payloads, failure = stream(route_to(upstream), {"messages": USER})
    assert failure is None
    assert chunks_of(payloads)[-2]["choices"][0]["finish_reason"] == expected


def test_n_two_gives_two_choices_plain_and_streamed(upstream):
    answer = chat(route_to(upstream), {"messages": USER, "n": 2})
    assert sent(upstream)["generationConfig"] == {"candidateCount": 2}
    assert [c["index"] for c in answer["choices"]] == [0, 1]
    assert {c["message"]["content"] for c in answer["choices"]} == {DEFAULT_REPLY_TEXT}
    assert answer["usage"]["completion_tokens"] == 8

    payloads, failure = stream(route_to(upstream), {"messages": USER, "n": 2})
    assert failure is None and payloads[-1] == DONE
    chunks = chunks_of(payloads)
    finishes = [c["choices"][0]["index"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert sorted(finishes) == [0, 1]
    for index in (0, 1):
        text = "".join(
            c["choices"][0]["delta"].get("content") or ""
            for c in chunks
            if c["choices"] and c["choices"][0]["index"] == index
        )
        assert text == DEFAULT_REPLY_TEXT
    assert chunks[-1]["usage"]["completion_tokens"] == 8


def test_thoughts_cached_and_reasoning_tokens_are_reported_as_openai_does(upstream):
    script = GeminiScript.thinking("Let me think") | GeminiScript.usage(cachedContentTokenCount=3)
    upstream.script(script, script)
    answer = chat(route_to(upstream), {"messages": USER})
    message = answer["choices"][0]["message"]
    assert message["content"] == DEFAULT_REPLY_TEXT and message["reasoning_content"] == "Let me think"
    assert answer["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 4 + 3,
        "total_tokens": 14,
        "prompt_tokens_details": {"cached_tokens": 3},
        "completion_tokens_details": {"reasoning_tokens": 3},
    }
    payloads, _ = stream(route_to(upstream), {"messages": USER})
    chunks = chunks_of(payloads)
    assert chunks[1]["choices"][0]["delta"] == {"reasoning_content": "Let me think"}
    assert chunks[-1]["usage"] == answer["usage"]


# ---------------------------------------------------------------- refusals and errors


def test_prompt_blocked_by_safety_is_a_400_content_filtered_error(upstream):
    blocked = {"messages": [{"role": "user", "content": "please BLOCKME now"}]}
    with pytest.raises(UpstreamError) as plain:
        chat(route_to(upstream), blocked)
    assert (plain.value.status, plain.value.code) == (400, "content_filtered")
    assert "SAFETY" in str(plain.value)
    with pytest.raises(UpstreamError) as streamed:
        stream(route_to(upstream), blocked)  # refused by start_chat, before any chunk
    assert (streamed.value.status, streamed.value.code) == (400, "content_filtered")


def test_429_is_rate_limited_with_googles_retry_delay(upstream):
    upstream.script(
        GeminiScript.error(429, retry_delay="36.2s"), GeminiScript.error(429, retry_after="9"), GeminiScript.error(429)
    )
    delays = []
    for _ in range(3):
        with pytest.raises(UpstreamError) as raised:
            chat(route_to(upstream), {"messages": USER})
        assert (raised.value.status, raised.value.code) == (429, "upstream_rate_limited")
        delays.append(raised.value.retry_after)
    assert delays == ["37", "9", "1"]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (500, (502, "upstream_error")),
        (503, (503, "upstream_unavailable")),
        (504, (504, "upstream_timeout")),
        (403, (502, "upstream_auth_failed")),
        (401, (502, "upstream_auth_failed")),
    ],
)
def test_provider_failures_are_the_gateways_not_the_callers(upstream, status, expected):
    upstream.script(GeminiScript.error(status))
    with pytest.raises(UpstreamError) as raised:
        chat(route_to(upstream), {"messages": USER})
    assert (raised.value.status, raised.value.code) == expected


def test_a_key_google_rejects_with_400_is_not_blamed_on_the_caller(upstream):
    with pytest.raises(UpstreamError) as wrong:
        chat(route_to(upstream, secret="AIzaSy-wrong-key"), {"messages": USER})
    assert (wrong.value.status, wrong.value.code) == (502, "upstream_auth_failed")
    assert upstream.requests[-1].headers["x-goog-api-key"] == "AIzaSy-wrong-key"
    with pytest.raises(UpstreamError) as missing:  # Google answers 403 PERMISSION_DENIED
        chat(route_to(upstream, secret=None), {"messages": USER})
    assert (missing.value.status, missing.value.code) == (502, "upstream_auth_failed")


def test_caller_errors_keep_their_status_and_message_without_the_secret(upstream):
    upstream.script(GeminiScript.error(400, f"Invalid value at 'temperature' for key {upstream.api_key}"))
    with pytest.raises(UpstreamError) as raised:
        chat(route_to(upstream), {"messages": USER})
    assert (raised.value.status, raised.value.code) == (400, "upstream_rejected_request")
    assert "Invalid value at 'temperature'" in str(raised.value)
    assert upstream.api_key not in str(raised.value) and "[redacted]" in str(raised.value)
    with pytest.raises(UpstreamError) as unknown_model:
        chat(route_to(upstream, model="gemini-0-nonexistent"), {"messages": USER})
    assert (unknown_model.value.status, unknown_model.value.code) == (404, "model_not_found")


def test_probe_tells_a_refused_key_from_an_accepted_one(upstream):
    async def probes(provider: GeminiProvider) -> list[bool | None]:
        return [
            await provider.probe(route_to(upstream)),
            await provider.probe(route_to(upstream, secret="AIzaSy-wrong-key")),
            await provider.probe(route_to(upstream, secret=None)),
            await provider.probe(route_to(upstream, base_url="http://127.0.0.1:9/v1beta")),
        ]

    assert asyncio.run(_call(probes)) == [True, False, False, None]
    assert upstream.requests[0].path == "/v1beta/models" and "key" not in upstream.requests[0].query


def test_unreachable_and_slow_providers(upstream):
    with pytest.raises(UpstreamError) as refused:
        chat(route_to(upstream, base_url="http://127.0.0.1:9/v1beta"), {"messages": USER})
    assert (refused.value.status, refused.value.code) == (502, "upstream_unavailable")
    upstream.script(GeminiScript.delay(1.0))
    with pytest.raises(UpstreamError) as slow:
        chat(route_to(upstream), {"messages": USER}, timeout=0.2)
    assert (slow.value.status, slow.value.code) == (504, "upstream_timeout")


@pytest.mark.parametrize(
    "script",
    [GeminiScript.break_stream_after(2), GeminiScript.error_in_stream_after(2), GeminiScript.no_finish()],
    ids=["dropped", "error-event", "no-finish"],
)
def test_a_stream_gemini_does_not_finish_raises_a_read_failure_never_done(upstream, script):
    upstream.script(script)
    payloads, failure = stream(route_to(upstream), {"messages": USER})
    assert isinstance(failure, READ_FAILURES)
    assert DONE not in payloads
    assert [c["choices"][0]["delta"].get("content") for c in chunks_of(payloads)[1:3]] == ["Hello", " from"]


def test_an_error_as_the_first_stream_event_is_an_upstream_error_before_any_chunk(upstream):
    upstream.script(GeminiScript.error_in_stream_after(0, code=500), GeminiScript.error_in_stream_after(0, code=503))
    with pytest.raises(UpstreamError) as raised:
        stream(route_to(upstream), {"messages": USER})
    assert (raised.value.status, raised.value.code) == (502, "upstream_error")
    with pytest.raises(UpstreamError) as overloaded:
        stream(route_to(upstream), {"messages": USER})
    assert (overloaded.value.status, overloaded.value.code) == (503, "upstream_unavailable")


def test_a_plain_answer_cut_off_is_an_upstream_error(upstream):
    upstream.script(GeminiScript.break_stream_after(0))
    with pytest.raises(UpstreamError) as raised:
        chat(route_to(upstream), {"messages": USER})
    assert raised.value.status == 502


# ---------------------------------------------------------------- embeddings


def test_embeddings_are_an_openai_list_with_estimated_usage(upstream):
    texts = ["hello", "a longer sentence"]
    answer = embed(
        route_to(upstream, model="gemini-embedding-001"),
        {"model": "google/gemini-embedding-001", "input": texts, "dimensions": 4},
    )
    assert answer["object"] == "list" and answer["model"] == "gemini-embedding-001"
    assert answer["data"] == [
        {"object": "embedding", "index": i, "embedding": embedding_vector(t, 4)} for i, t in enumerate(texts)
    ]
    assert answer["usage"] == {"prompt_tokens": 2 + 5, "total_tokens": 7, "usage_source": "estimated"}
    request = upstream.requests[0]
    assert request.path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert request.json["requests"][0] == {
        "model": "models/gemini-embedding-001",
        "content": {"parts": [{"text": "hello"}]},
        "outputDimensionality": 4,
    }


def test_embeddings_in_base64_and_more_than_one_batch(upstream):
    texts = [f"text {i}" for i in range(150)]
    answer = embed(route_to(upstream, model="gemini-embedding-001"), {"input": texts, "encoding_format": "base64"})
    assert [len(r.json["requests"]) for r in upstream.requests] == [100, 50]
    decoded = struct.unpack("<8f", base64.b64decode(answer["data"][149]["embedding"]))
    assert decoded == pytest.approx(embedding_vector("text 149"), abs=1e-6)
    assert [d["index"] for d in answer["data"]] == list(range(150))


def test_token_array_embedding_input_is_refused(upstream):
    with pytest.raises(InvalidRequest):
        embed(route_to(upstream, model="gemini-embedding-001"), {"input": [[1, 2, 3]]})
    assert upstream.requests == []


# ---------------------------------------------------------------- garbled answers and bugs of ours


def _a_bug(*args: Any, **kwargs: Any) -> Any:
    raise KeyError("a bug in our translation")


@pytest.mark.parametrize(
    "body",
    [
        "<html>oops</html>",
        "{}",
        '{"candidates": "many"}',
        '{"candidates": ["not a candidate"]}',
        '{"candidates": [{"index": "first", "content": {"parts": [{"text": "hi"}]}}]}',
        '{"candidates": [{"content": {"parts": ["not a part"]}}]}',
        '{"candidates": [{"content": {"parts": 5}}]}',
        '{"candidates": [{"content": {"parts": [{"functionCall": {"args": {}}}]}}]}',
    ],
)
def test_a_plain_answer_gemini_garbled_is_still_a_502_bad_response(upstream, body):
    upstream.script(GeminiScript.raw(200, body, "application/json"))
    with pytest.raises(UpstreamError) as raised:
        chat(route_to(upstream), {"messages": USER})
    assert (raised.value.status, raised.value.code) == (502, "upstream_bad_response")


def test_a_bug_in_our_gemini_translation_propagates_and_is_not_taken_for_a_bad_answer(upstream, monkeypatch):
    monkeypatch.setattr(gemini, "completion_document", _a_bug)
    with pytest.raises(KeyError):
        chat(route_to(upstream), {"messages": USER})


def test_a_bug_in_our_gemini_stream_translation_is_no_read_failure(upstream, monkeypatch):
    monkeypatch.setattr(ChunkTranslator, "_candidate_chunks", _a_bug)
    with pytest.raises(KeyError):  # stream() returns read failures; a bug propagates
        stream(route_to(upstream), {"messages": USER})


@pytest.mark.parametrize(
    "fragment",
    [
        {"candidates": [{"content": {"parts": ["not a part"]}}]},
        {"candidates": [{"content": "not content"}]},
        {"candidates": [7]},
        {"error": "not an object"},
        "not an object",
    ],
)
def test_a_garbled_gemini_stream_fragment_is_a_malformed_answer(fragment):
    with pytest.raises(MalformedUpstreamAnswer):
        ChunkTranslator({}, MODEL, 1).take(fragment)


# ---------------------------------------------------------------- Anthropic fidelity


@pytest.mark.parametrize(
    ("effort", "max_tokens", "budget"),
    [("none", None, 0), ("minimal", None, 512), ("low", None, 1024), ("medium", 4000, 2048), ("high", 3000, 3000)],
)
def test_reasoning_effort_becomes_a_thinking_budget_never_above_max_tokens(upstream, effort, max_tokens, budget):
    body: dict[str, Any] = {"messages": USER, "reasoning_effort": effort}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    chat(route_to(upstream), body)
    assert upstream.requests[-1].json["generationConfig"]["thinkingConfig"] == {"thinkingBudget": budget}


def test_anthropic_cache_marks_and_thinking_blocks_are_dropped_for_gemini(upstream):
    signed = {"type": "thinking", "thinking": "Claude's reasoning", "signature": "sig"}
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "Rules", "cache_control": {"type": "ephemeral"}}]},
        {"role": "user", "content": "Hi", "cache_control": {"type": "ephemeral"}},
        {"role": "assistant", "content": "Hello", "thinking_blocks": [signed]},
        {"role": "user", "content": [{"type": "text", "text": "Again", "cache_control": {"type": "ephemeral"}}]},
    ]
    answer = chat(route_to(upstream), {"messages": messages})
    assert answer["choices"][0]["message"]["content"]
    sent = upstream.requests[-1].json
    assert sent["systemInstruction"] == {"parts": [{"text": "Rules"}]}
    assert sent["contents"][1] == {"role": "model", "parts": [{"text": "Hello"}]}
    assert "cache_control" not in str(sent) and "signature" not in str(sent)
