"""The fake OpenAI upstream speaks the wire format the official SDK expects."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[3]
if str(_REPO_ROOT) not in sys.path:  # `pytest` (unlike `python -m pytest`) may not put the repo root on sys.path
    sys.path.insert(0, str(_REPO_ROOT))

import httpx  # noqa: E402
import openai  # noqa: E402
import pytest  # noqa: E402

from tests.fakes.openai_upstream import (  # noqa: E402
    DEFAULT_REPLY_TEXT,
    FakeOpenAIUpstream,
    Scripted,
    count_prompt_tokens,
    reply_tokens,
)

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


@pytest.fixture(scope="module")
def upstream():
    with FakeOpenAIUpstream() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(upstream):
    upstream.reset()
    yield


@pytest.fixture
def client(upstream):
    with openai.OpenAI(base_url=upstream.base_url, api_key=upstream.api_key, max_retries=0, timeout=5) as c:
        yield c


def sse_frames(upstream, body):
    """Raw ``data:`` payloads of a streamed chat completion."""
    headers = {"authorization": f"Bearer {upstream.api_key}"}
    with httpx.stream("POST", f"{upstream.base_url}/chat/completions", json=body, headers=headers) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        text = resp.read().decode()
    assert text.endswith("data: [DONE]\n\n")
    return [block.removeprefix("data: ") for block in text.split("\n\n") if block]


# ---------------------------------------------------------------- token rules


def test_token_rules():
    assert reply_tokens(DEFAULT_REPLY_TEXT) == ["Hello", " from", " fake", " upstream"]
    for text in ["", "  ", "a  b ", " lead", "x\ny"]:
        assert "".join(reply_tokens(text)) == text
    # (14 + 28) chars // 4 + 2 messages
    assert count_prompt_tokens(MESSAGES) == 42 // 4 + 2
    parts = [{"role": "user", "content": [{"type": "text", "text": "abcd"}, {"type": "image_url", "image_url": {}}]}]
    assert count_prompt_tokens(parts) == 1 + 1


# ---------------------------------------------------------------- chat completions


def test_plain_completion_reports_usage(upstream, client):
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == DEFAULT_REPLY_TEXT
    assert choice.finish_reason == "stop"
    usage = completion.usage
    assert usage.prompt_tokens == count_prompt_tokens(MESSAGES)
    assert usage.completion_tokens == len(reply_tokens(DEFAULT_REPLY_TEXT)) == 4
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details.reasoning_tokens == 0

    [recorded] = upstream.requests
    assert (recorded.method, recorded.path) == ("POST", "/v1/chat/completions")
    assert recorded.headers["authorization"] == f"Bearer {upstream.api_key}"
    assert recorded.json["messages"] == MESSAGES


def test_streaming_with_include_usage(upstream, client):
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)

    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    content = [c.choices[0].delta.content for c in chunks[1:-2]]
    assert content == reply_tokens(DEFAULT_REPLY_TEXT)
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.choices == []
    assert last.usage.prompt_tokens == count_prompt_tokens(MESSAGES)
    assert last.usage.completion_tokens == 4
    assert {c.id for c in chunks} == {chunks[0].id}


def test_stream_wire_format_usage_null_and_done(upstream):
    body = {"model": "m", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    frames = sse_frames(upstream, body)
    assert frames[-1] == "[DONE]"
    objects = [json.loads(f) for f in frames[:-1]]
    assert all(o["object"] == "chat.completion.chunk" for o in objects)
    assert all("usage" in o and o["usage"] is None for o in objects[:-1])
    assert objects[-1]["choices"] == [] and objects[-1]["usage"]["total_tokens"] > 0

    plain = [json.loads(f) for f in sse_frames(upstream, {**body, "stream_options": None})[:-1]]
    assert all("usage" not in o for o in plain)
    assert plain[-1]["choices"][0]["finish_reason"] == "stop"


def test_tool_call(upstream, client):
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, tools=[WEATHER_TOOL])

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "test", "unit": "c"}
    assert completion.usage.completion_tokens == len(reply_tokens(call.function.arguments))


def test_streamed_tool_call_accumulates_to_arguments(upstream, client):
    stream = client.chat.completions.create(model="m", messages=MESSAGES, tools=[WEATHER_TOOL], stream=True)
    chunks = list(stream)
    first = chunks[0].choices[0].delta.tool_calls[0]
    assert first.function.name == "get_weather" and first.id
    arguments = "".join(c.choices[0].delta.tool_calls[0].function.arguments for c in chunks[:-1])
    assert json.loads(arguments) == {"city": "test", "unit": "c"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_no_tool_call_after_tool_result(client):
    messages = [*MESSAGES, {"role": "assistant", "content": None, "tool_calls": []}, {"role": "tool", "content": "20C"}]
    completion = client.chat.completions.create(model="m", messages=messages, tools=[WEATHER_TOOL])
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.content == DEFAULT_REPLY_TEXT


def test_n_choices(client):
    completion = client.chat.completions.create(model="m", messages=MESSAGES, n=2)
    assert [c.index for c in completion.choices] == [0, 1]
    assert all(c.message.content == DEFAULT_REPLY_TEXT for c in completion.choices)
    assert completion.usage.completion_tokens == 2 * 4


@pytest.mark.parametrize("limit_field", ["max_tokens", "max_completion_tokens"])
def test_token_limit_truncates_with_length(client, limit_field):
    completion = client.chat.completions.create(model="m", messages=MESSAGES, **{limit_field: 2})
    assert completion.choices[0].message.content == "Hello from"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 2


def test_stop_sequence(client):
    completion = client.chat.completions.create(model="m", messages=MESSAGES, stop=[" fake"])
    assert completion.choices[0].message.content == "Hello from"
    assert completion.choices[0].finish_reason == "stop"


def test_unknown_fields_are_reported(client):
    raw = client.chat.completions.with_raw_response.create(
        model="m", messages=MESSAGES, temperature=0, extra_body={"zeta": 1, "alpha": {"x": 1}}
    )
    assert raw.headers["x-fake-unknown-fields"] == "alpha,zeta"
    assert raw.parse().choices[0].message.content == DEFAULT_REPLY_TEXT


# ---------------------------------------------------------------- errors


def test_bad_key_is_401(upstream):
    with openai.OpenAI(base_url=upstream.base_url, api_key="sk-wrong-key-000000", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as info:
            bad.chat.completions.create(model="m", messages=MESSAGES)
    assert info.value.status_code == 401
    assert info.value.body["type"] == "invalid_request_error"
    assert info.value.body["code"] == "invalid_api_key"
    assert info.value.body["param"] is None

    missing = httpx.get(f"{upstream.base_url}/models")
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"


def test_validation_errors_use_openai_shape(upstream):
    headers = {"authorization": f"Bearer {upstream.api_key}"}
    url = f"{upstream.base_url}/chat/completions"
    no_messages = httpx.post(url, json={"model": "m"}, headers=headers)
    assert no_messages.status_code == 400
    assert no_messages.json() == {
        "error": {
            "message": "Missing required parameter: 'messages'.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "missing_required_parameter",
        }
    }
    no_model = httpx.post(url, json={"messages": MESSAGES}, headers=headers)
    assert no_model.status_code == 400
    assert no_model.json()["error"]["type"] == "invalid_request_error"


def test_scripted_500_then_normal(upstream, client):
    upstream.script(Scripted.error(500, "boom"))
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert info.value.body["message"] == "boom"
    assert info.value.body["type"] == "server_error"
    assert client.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content
    assert len(upstream.requests) == 2


def test_scripted_429_sends_retry_after(upstream, client):
    upstream.script(Scripted.error(429, "Rate limit reached", code="rate_limit_exceeded", retry_after=3))
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert info.value.response.headers["retry-after"] == "3"
    assert info.value.code == "rate_limit_exceeded"


def test_break_stream_after_raises_in_sdk_iteration(upstream, client):
    upstream.script(Scripted.break_stream_after(2))
    stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    received = []
    with pytest.raises((openai.APIConnectionError, httpx.HTTPError)):
        for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    assert received == ["", "Hello", " from"]


def test_scripted_usage_override_and_no_usage(upstream, client):
    upstream.script(
        Scripted.usage(prompt_tokens=100, cached_tokens=40) | Scripted.usage(reasoning_tokens=3),
        Scripted.no_usage(),
    )
    usage = client.chat.completions.create(model="m", messages=MESSAGES).usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (100, 4, 104)
    assert usage.prompt_tokens_details.cached_tokens == 40
    assert usage.completion_tokens_details.reasoning_tokens == 3

    stream = client.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)


def test_client_disconnect_is_recorded(upstream, client):
    upstream.script(Scripted.chunk_delay(0.2))
    stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    next(iter(stream))
    stream.close()
    assert upstream.wait_until(lambda: upstream.requests[-1].disconnected, timeout=3)


# ---------------------------------------------------------------- embeddings, models, subprocess


def test_embeddings_base64_and_float_agree(client):
    default = client.embeddings.create(model="text-embedding-3-small", input=["abcd", "efgh"])  # SDK asks base64
    floats = client.embeddings.create(model="text-embedding-3-small", input=["abcd", "efgh"], encoding_format="float")
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
    assert len(default.data[0].embedding) == 8 and default.data[0].embedding != default.data[1].embedding
    assert default.usage.prompt_tokens == 2 * (4 // 4 + 1)
    assert len(client.embeddings.create(model="e", input="x", dimensions=3).data[0].embedding) == 3


def test_models_list(client):
    assert "gpt-4o-mini" in [m.id for m in client.models.list()]
    assert client.models.retrieve("gpt-4o").id == "gpt-4o"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_runs_as_subprocess():
    command = [sys.executable, "-m", "tests.fakes.openai_upstream", "--port", "0"]
    with subprocess.Popen(command, cwd=_REPO_ROOT, stdout=subprocess.PIPE, text=True) as proc:
        try:
            port = int(proc.stdout.readline())
            base = f"http://127.0.0.1:{port}"
            httpx.post(f"{base}/_fake/script", json=[Scripted.error(503, "overloaded").to_dict()])
            assert httpx.post(f"{base}/v1/chat/completions", json={}).status_code == 503
            with openai.OpenAI(base_url=f"{base}/v1", api_key="sk-upstream-test-0001", max_retries=0) as c:
                reply = c.chat.completions.create(model="m", messages=MESSAGES)
            assert reply.choices[0].message.content == DEFAULT_REPLY_TEXT
            assert len(httpx.get(f"{base}/_fake/requests").json()) == 2
        finally:
            proc.terminate()
        assert proc.wait(5) == 0
