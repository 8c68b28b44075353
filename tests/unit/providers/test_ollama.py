"""The Ollama adapter against a fake Ollama server on loopback (real HTTP, Ollama's wire format)."""

import asyncio
import base64
import json
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from adapters.providers.base import DONE, READ_FAILURES
from adapters.providers.ollama import OllamaProvider, OllamaStreamError
from application.routing import Route
from domain.errors import InvalidRequest, MalformedUpstreamAnswer, UpstreamError
from tests.fakes.ollama_upstream import DEFAULT_REPLY_TEXT, FakeOllamaUpstream, OllamaScripted
from tests.fakes.openai_wire import count_prompt_tokens, embedding_vector, reply_tokens

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the nice people"},
]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}
PIXEL = base64.b64encode(b"\x89PNG\r\n\x1a\n fake png bytes").decode()
REPLY_TOKENS = len(reply_tokens(DEFAULT_REPLY_TEXT))


@pytest.fixture(scope="module")
def upstream():
    with FakeOllamaUpstream() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(upstream):
    upstream.reset()


def route(base_url: str, model: str = "llama3.2", secret: str | None = None) -> Route:
    return Route(
        model=f"local/{model}",
        provider="local",
        kind="ollama",
        base_url=base_url,
        region=None,
        upstream_model=model,
        credential_id=None,
        secret=secret,
    )


def run(action: Callable[[OllamaProvider], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with aiohttp.ClientSession() as session:
            return await action(OllamaProvider(session, timeout_seconds=5))

    return asyncio.run(main())


def complete(upstream: FakeOllamaUpstream, body: dict[str, Any], model: str = "llama3.2") -> dict[str, Any]:
    async def action(provider: OllamaProvider) -> dict[str, Any]:
        exchange = await provider.start_chat(route(upstream.base_url, model), body)
        try:
            return orjson.loads(await exchange.read_completion())
        finally:
            exchange.release()

    return run(action)


def stream(upstream: FakeOllamaUpstream, body: dict[str, Any]) -> tuple[list[bytes], BaseException | None]:
    """Every payload the exchange yielded, and what reading it raised (None when it ended cleanly)."""

    async def action(provider: OllamaProvider) -> tuple[list[bytes], BaseException | None]:
        exchange = await provider.start_chat(route(upstream.base_url), {**body, "stream": True})
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


def chunks_of(payloads: list[bytes]) -> list[dict[str, Any]]:
    return [orjson.loads(p) for p in payloads if p != DONE]


def deltas(payloads: list[bytes]) -> list[dict[str, Any]]:
    return [chunk["choices"][0]["delta"] for chunk in chunks_of(payloads) if chunk["choices"]]


def sent(upstream: FakeOllamaUpstream) -> dict[str, Any]:
    assert len(upstream.requests) == 1
    return upstream.requests[0].json


# ---------------------------------------------------------------- plain and streamed answers


def test_plain_answer_is_a_chat_completion_with_ollamas_counts(upstream):
    answer = complete(upstream, {"model": "local/llama3.2", "messages": MESSAGES})

    request = sent(upstream)
    assert upstream.requests[0].path == "/api/chat"
    assert request == {"model": "llama3.2", "messages": MESSAGES, "stream": False}
    assert answer["object"] == "chat.completion"
    assert answer["model"] == "llama3.2"
    assert answer["choices"] == [
        {
            "index": 0,
            "logprobs": None,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": DEFAULT_REPLY_TEXT},
        }
    ]
    prompt = count_prompt_tokens(MESSAGES)
    assert answer["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": REPLY_TOKENS,
        "total_tokens": prompt + REPLY_TOKENS,
    }


def test_stream_is_role_deltas_finish_usage_then_done(upstream):
    payloads, failure = stream(upstream, {"model": "local/llama3.2", "messages": MESSAGES})

    assert failure is None
    assert sent(upstream)["stream"] is True
    assert payloads[-1] == DONE
    chunks = chunks_of(payloads)
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    texts = [c["choices"][0]["delta"]["content"] for c in chunks[1:-2]]
    assert texts == reply_tokens(DEFAULT_REPLY_TEXT)
    assert chunks[-2]["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
    prompt = count_prompt_tokens(MESSAGES)
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": REPLY_TOKENS,
        "total_tokens": prompt + REPLY_TOKENS,
    }


def test_a_prompt_cache_hit_reports_the_output_and_zero_prompt_tokens(upstream):
    upstream.script(OllamaScripted.cache_hit(), OllamaScripted.cache_hit())
    answer = complete(upstream, {"messages": MESSAGES})
    payloads, _ = stream(upstream, {"messages": MESSAGES})

    expected = {"prompt_tokens": 0, "completion_tokens": REPLY_TOKENS, "total_tokens": REPLY_TOKENS}
    assert answer["usage"] == expected
    assert chunks_of(payloads)[-1]["usage"] == expected


def test_thinking_becomes_reasoning_content(upstream):
    upstream.script(OllamaScripted.think("Let me see."), OllamaScripted.think("Let me see."))
    answer = complete(upstream, {"messages": MESSAGES})
    payloads, _ = stream(upstream, {"messages": MESSAGES})

    assert answer["choices"][0]["message"]["reasoning_content"] == "Let me see."
    assert answer["choices"][0]["message"]["content"] == DEFAULT_REPLY_TEXT
    assert "".join(d.get("reasoning_content", "") for d in deltas(payloads)) == "Let me see."
    assert answer["usage"]["completion_tokens"] == REPLY_TOKENS + 3


# ---------------------------------------------------------------- request options


def test_options_go_to_ollama_options_and_unknown_fields_stay_home(upstream):
    complete(
        upstream,
        {
            "messages": MESSAGES,
            "max_tokens": 50,
            "max_completion_tokens": 40,
            "temperature": 0.2,
            "top_p": 0.9,
            "seed": 7,
            "stop": "END",
            "presence_penalty": 0.5,
            "user": "u-1",
            "logprobs": False,
            "stream_options": None,
        },
    )

    request = sent(upstream)
    assert request["options"] == {
        "num_predict": 40,
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 7,
        "stop": ["END"],
        "presence_penalty": 0.5,
    }
    assert set(request) == {"model", "messages", "stream", "options"}


def test_response_format_json_object_and_json_schema_become_format(upstream):
    as_json = complete(upstream, {"messages": MESSAGES, "response_format": {"type": "json_object"}})
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    as_schema = complete(
        upstream,
        {
            "messages": MESSAGES,
            "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
        },
    )

    assert [r.json["format"] for r in upstream.requests] == ["json", schema]
    assert json.loads(as_json["choices"][0]["message"]["content"]) == {"reply": DEFAULT_REPLY_TEXT}
    assert json.loads(as_schema["choices"][0]["message"]["content"]) == {"age": 1}


@pytest.mark.parametrize(
    "body, finish_reason",
    [
        ({"messages": MESSAGES}, "stop"),
        ({"messages": MESSAGES, "max_tokens": 2}, "length"),
        ({"messages": MESSAGES, "tools": [WEATHER_TOOL]}, "tool_calls"),
    ],
)
def test_done_reason_maps_to_finish_reason(upstream, body, finish_reason):
    assert complete(upstream, body)["choices"][0]["finish_reason"] == finish_reason
    payloads, _ = stream(upstream, body)
    assert chunks_of(payloads)[-2]["choices"][0]["finish_reason"] == finish_reason


def test_a_length_stop_counts_only_the_tokens_produced(upstream):
    answer = complete(upstream, {"messages": MESSAGES, "max_tokens": 2})
    assert answer["choices"][0]["message"]["content"] == "".join(reply_tokens(DEFAULT_REPLY_TEXT)[:2])
    assert answer["usage"]["completion_tokens"] == 2


def test_n_above_one_is_refused_before_anything_is_sent(upstream):
    with pytest.raises(InvalidRequest) as caught:
        complete(upstream, {"messages": MESSAGES, "n": 2})
    assert caught.value.param == "n"
    assert upstream.requests == []


# ---------------------------------------------------------------- tools


def test_tool_call_round_trip(upstream):
    first = complete(upstream, {"messages": MESSAGES, "tools": [WEATHER_TOOL]})
    message = first["choices"][0]["message"]
    assert sent(upstream)["tools"] == [WEATHER_TOOL]
    assert message["content"] is None
    [call] = message["tool_calls"]
    assert call["id"] == "call_0" and call["type"] == "function" and call["function"]["name"] == "get_weather"
    arguments = json.loads(call["function"]["arguments"])
    assert arguments == {"city": "test", "unit": "c"}
    assert first["usage"]["completion_tokens"] == len(reply_tokens(json.dumps(arguments)))

    upstream.reset()
    history = [
        *MESSAGES,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_0", "content": "12 degrees"},
    ]
    second = complete(upstream, {"messages": history, "tools": [WEATHER_TOOL]})

    request = sent(upstream)
    assert request["messages"][2] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": "get_weather", "arguments": arguments}}],
    }
    assert request["messages"][3] == {"role": "tool", "content": "12 degrees", "tool_name": "get_weather"}
    assert second["choices"][0]["message"]["content"] == DEFAULT_REPLY_TEXT
    assert second["choices"][0]["finish_reason"] == "stop"


def test_streamed_tool_call_is_one_delta_with_index_id_and_json_text(upstream):
    payloads, failure = stream(upstream, {"messages": MESSAGES, "tools": [WEATHER_TOOL]})

    assert failure is None and payloads[-1] == DONE
    calls = [d["tool_calls"] for d in deltas(payloads) if "tool_calls" in d]
    assert len(calls) == 1
    [call] = calls[0]
    assert {k: call[k] for k in ("index", "id", "type")} == {"index": 0, "id": "call_0", "type": "function"}
    assert call["function"]["name"] == "get_weather"
    arguments = json.loads(call["function"]["arguments"])
    assert chunks_of(payloads)[-1]["usage"]["completion_tokens"] == len(reply_tokens(json.dumps(arguments)))


def test_tool_choice_none_sends_no_tools(upstream):
    answer = complete(upstream, {"messages": MESSAGES, "tools": [WEATHER_TOOL], "tool_choice": "none"})
    assert "tools" not in sent(upstream)
    assert answer["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("arguments", ["not json", "[1, 2]", "42"])
def test_tool_call_arguments_that_are_not_a_json_object_are_refused_before_sending(upstream, arguments):
    call = {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
    history = [*MESSAGES, {"role": "assistant", "content": None, "tool_calls": [call]}]
    with pytest.raises(InvalidRequest):
        complete(upstream, {"messages": history})
    assert upstream.requests == []


# ---------------------------------------------------------------- images


def test_a_base64_image_goes_in_the_messages_images(upstream):
    content = [
        {"type": "text", "text": "What is "},
        {"type": "text", "text": "this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}", "detail": "low"}},
    ]
    answer = complete(upstream, {"messages": [{"role": "user", "content": content}]}, model="llava")

    assert sent(upstream)["messages"] == [{"role": "user", "content": "What is this?", "images": [PIXEL]}]
    assert answer["choices"][0]["message"]["content"] == DEFAULT_REPLY_TEXT


@pytest.mark.parametrize(
    "url, reason",
    [
        ("https://example.com/cat.png", "cannot fetch images by URL"),
        ("data:image/png,not-base64", "must be base64-encoded"),
        ("data:image/png;base64,%%%", "not valid base64"),
    ],
)
def test_an_image_ollama_cannot_take_is_refused_before_sending(upstream, url, reason):
    content = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": url}}]
    with pytest.raises(InvalidRequest) as caught:
        complete(upstream, {"messages": [{"role": "user", "content": content}]}, model="llava")
    assert caught.value.param == "messages[0].content[1]"
    assert reason in str(caught.value)
    assert upstream.requests == []


# ---------------------------------------------------------------- errors


def test_an_unknown_model_is_a_404_with_ollamas_message(upstream):
    with pytest.raises(UpstreamError) as caught:
        complete(upstream, {"messages": MESSAGES}, model="nope")
    assert caught.value.status == 404
    assert caught.value.code == "model_not_found"
    assert 'model "nope" not found, try pulling it first' in str(caught.value)


@pytest.mark.parametrize(
    "status, seen, code",
    [
        (400, 400, "upstream_rejected_request"),
        (500, 502, "upstream_error"),
        (503, 503, "upstream_unavailable"),
        (401, 502, "upstream_auth_failed"),
        (429, 429, "upstream_rate_limited"),
    ],
)
def test_ollama_errors_map_to_the_status_the_caller_sees(upstream, status, seen, code):
    upstream.script(OllamaScripted.error(status, "llama runner process has terminated"))
    with pytest.raises(UpstreamError) as caught:
        complete(upstream, {"messages": MESSAGES})
    assert (caught.value.status, caught.value.code) == (seen, code)
    assert ("llama runner process has terminated" in str(caught.value)) == (seen == 400)


def test_a_base_url_without_ollama_behind_it_is_a_502_not_a_missing_model(upstream):
    with pytest.raises(UpstreamError) as caught:
        run(lambda p: p.start_chat(route(upstream.base_url + "/v1"), {"messages": MESSAGES}))
    assert caught.value.status == 502


def test_an_unreachable_ollama_is_a_502_upstream_unavailable():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends: nothing listens there
    with pytest.raises(UpstreamError) as caught:
        run(lambda p: p.start_chat(route(f"http://127.0.0.1:{port}"), {"messages": MESSAGES}))
    assert (caught.value.status, caught.value.code) == (502, "upstream_unavailable")


def test_a_stream_that_breaks_off_raises_a_read_failure_and_never_done(upstream):
    upstream.script(OllamaScripted.break_stream_after(2))
    payloads, failure = stream(upstream, {"messages": MESSAGES})

    assert isinstance(failure, READ_FAILURES)
    assert DONE not in payloads
    assert [d.get("content") for d in deltas(payloads)][1:] == reply_tokens(DEFAULT_REPLY_TEXT)[:2]


def test_a_stream_that_ends_cleanly_without_done_raises_a_read_failure(upstream):
    upstream.script(OllamaScripted.end_stream_after(3))
    payloads, failure = stream(upstream, {"messages": MESSAGES})

    assert isinstance(failure, OllamaStreamError) and isinstance(failure, READ_FAILURES)
    assert DONE not in payloads
    assert len(deltas(payloads)) == 4  # the role chunk and three tokens, no finish, no usage


def test_an_error_line_mid_stream_raises_a_read_failure_and_never_done(upstream):
    upstream.script(OllamaScripted.error_line_after(1, "model runner crashed"))
    payloads, failure = stream(upstream, {"messages": MESSAGES})

    assert isinstance(failure, OllamaStreamError) and isinstance(failure, READ_FAILURES)
    assert "model runner crashed" in str(failure)
    assert DONE not in payloads


def test_a_plain_answer_that_is_not_json_raises_a_read_failure(upstream):
    upstream.script(OllamaScripted.raw(200, "<html>proxy</html>", "text/html"))
    with pytest.raises(READ_FAILURES):
        complete(upstream, {"messages": MESSAGES})


# ---------------------------------------------------------------- embeddings


def embed(upstream: FakeOllamaUpstream, body: dict[str, Any], model: str = "nomic-embed-text") -> dict[str, Any]:
    return orjson.loads(run(lambda p: p.embed(route(upstream.base_url, model), body)))


def test_embeddings_of_a_list_are_openai_embeddings_with_ollamas_count(upstream):
    texts = ["first text", "second, longer text"]
    result = embed(upstream, {"model": "local/nomic-embed-text", "input": texts, "dimensions": 4})

    assert upstream.requests[0].path == "/api/embed"
    assert sent(upstream) == {"model": "nomic-embed-text", "input": texts, "dimensions": 4}
    assert result["object"] == "list" and result["model"] == "nomic-embed-text"
    assert [item["index"] for item in result["data"]] == [0, 1]
    assert result["data"][1]["embedding"] == pytest.approx(embedding_vector(texts[1], 4))
    tokens = sum(len(t) // 4 + 1 for t in texts)
    assert result["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


def test_embeddings_in_base64_are_float32_little_endian(upstream):
    result = embed(upstream, {"input": "one text", "encoding_format": "base64"})

    raw = base64.b64decode(result["data"][0]["embedding"])
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == pytest.approx(embedding_vector("one text", 8))


def test_token_array_embeddings_are_refused_before_sending(upstream):
    with pytest.raises(InvalidRequest):
        embed(upstream, {"input": [[1, 2, 3]]})
    assert upstream.requests == []


def test_embeddings_of_an_unknown_model_are_a_404(upstream):
    with pytest.raises(UpstreamError) as caught:
        embed(upstream, {"input": "x"}, model="missing-embedder")
    assert caught.value.status == 404


# ---------------------------------------------------------------- credential probe


def test_a_configured_secret_goes_as_a_bearer_token_and_none_goes_without_one(upstream):
    complete(upstream, {"messages": MESSAGES})
    run(lambda p: p.start_chat(route(upstream.base_url, secret="proxy-token-1234"), {"messages": MESSAGES}))

    assert "authorization" not in upstream.requests[0].headers
    assert upstream.requests[1].headers["authorization"] == "Bearer proxy-token-1234"


def test_the_probe_tells_whether_ollama_answers(upstream):
    assert run(lambda p: p.probe(route(upstream.base_url, secret="proxy-token-1234"))) is True
    assert upstream.requests == []  # the probe is not a model request
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert run(lambda p: p.probe(route(f"http://127.0.0.1:{port}"))) is None


# ---------------------------------------------------------------- garbled answers


@pytest.mark.parametrize("body", ["<html>oops</html>", "[1, 2]", '{"message": {"content": "hi"}}'])
def test_a_plain_answer_ollama_garbled_is_a_malformed_answer(upstream, body):
    upstream.script(OllamaScripted.raw(200, body, "application/json"))
    with pytest.raises(MalformedUpstreamAnswer):
        complete(upstream, {"messages": [{"role": "user", "content": "hi"}]})


def test_a_stream_line_that_is_not_json_is_a_read_failure(upstream):
    upstream.script(OllamaScripted.raw(200, '{"message": {"content": "hi"}, "done": false}\n{not json\n'))
    payloads, failure = stream(upstream, {"messages": [{"role": "user", "content": "hi"}]})
    assert isinstance(failure, MalformedUpstreamAnswer) and DONE not in payloads
