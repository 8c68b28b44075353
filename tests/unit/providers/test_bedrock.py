"""BedrockProvider speaks Converse / ConverseStream / Titan invoke to a fake Bedrock on
loopback that verifies SigV4 for real, and hands the gateway OpenAI chat format."""

import asyncio
import base64
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from botocore.credentials import Credentials
from yarl import URL

from adapters.providers import bedrock_response
from adapters.providers.base import DONE, READ_FAILURES
from adapters.providers.bedrock import BedrockProvider, BedrockStreamError, signed_headers
from application.routing import Route
from domain.errors import InvalidRequest, MalformedUpstreamAnswer, UpstreamError
from tests.fakes.bedrock_upstream import BedrockScript, FakeBedrockUpstream
from tests.fakes.openai_wire import embedding_vector

MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the nice people"},
]
PROMPT_TOKENS = (14 + 28) // 4 + 1  # the fake's rule: chars // 4 + messages
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


@pytest.fixture(scope="module")
def fake():
    with FakeBedrockUpstream(
        access_key_id="AKIATESTBEDROCK00001", secret_access_key="s3cr3t/Key+Bedrock0000000001", region="eu-west-3"
    ) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(fake):
    fake.reset()


def route_for(
    fake: FakeBedrockUpstream,
    *,
    secret: str | None = None,
    region: str | None = "eu-west-3",
    model: str = MODEL,
    base_url: str | None = None,
) -> Route:
    return Route(
        model="aws/claude",
        provider="aws",
        kind="bedrock",
        base_url=base_url or fake.base_url,
        region=region,
        upstream_model=model,
        credential_id="cred-1",
        secret=fake.secret if secret is None else secret,
    )


def run(use: Callable[[BedrockProvider], Awaitable[Any]], timeout: float = 5.0) -> Any:
    async def go() -> Any:
        async with aiohttp.ClientSession() as session:
            return await use(BedrockProvider(session, timeout_seconds=timeout))

    return asyncio.run(go())


def chat(route: Route, body: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    async def use(provider: BedrockProvider) -> dict[str, Any]:
        exchange = await provider.start_chat(route, body)
        try:
            return orjson.loads(await exchange.read_completion())
        finally:
            exchange.release()

    return run(use, timeout)


def stream(route: Route, body: dict[str, Any]) -> tuple[list[Any], BaseException | None]:
    """Parsed chunks (``DONE`` kept as bytes) and what reading raised, if anything."""

    async def use(provider: BedrockProvider) -> tuple[list[Any], BaseException | None]:
        exchange = await provider.start_chat(route, {**body, "stream": True})
        chunks: list[Any] = []
        try:
            async for data in exchange.stream_data():
                chunks.append(data if data == DONE else orjson.loads(data))
        except READ_FAILURES as exc:
            return chunks, exc
        finally:
            exchange.release()
        return chunks, None

    return run(use)


def upstream_error(call: Callable[[], Any]) -> UpstreamError:
    with pytest.raises(UpstreamError) as caught:
        call()
    return caught.value


def deltas(chunks: list[Any]) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in chunks if isinstance(c, dict) and c["choices"]]


# ---------------------------------------------------------------- plain and streamed text


def test_plain_chat_becomes_one_openai_completion_with_bedrock_usage(fake):
    answer = chat(route_for(fake), {"model": "aws/claude", "messages": MESSAGES})
    assert answer["object"] == "chat.completion" and answer["model"] == MODEL
    assert answer["id"] == "chatcmpl-fake-request-000001"
    assert answer["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello from fake Bedrock", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert answer["usage"] == {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": 4,
        "total_tokens": PROMPT_TOKENS + 4,
        "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    [request] = fake.requests
    assert request.operation == "converse" and request.model_id == MODEL
    assert request.json == {
        "messages": [{"role": "user", "content": [{"text": "Say hello to the nice people"}]}],
        "system": [{"text": "You are terse."}],
    }


def test_stream_is_role_deltas_finish_usage_then_done(fake):
    chunks, failure = stream(route_for(fake), {"model": "aws/claude", "messages": MESSAGES})
    assert failure is None
    assert chunks[-1] == DONE
    assert deltas(chunks) == [
        {"role": "assistant", "content": ""},
        {"content": "Hello"},
        {"content": " from"},
        {"content": " fake"},
        {"content": " Bedrock"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-2]] == [None] * 5 + ["stop"]
    usage_chunk = chunks[-2]
    assert usage_chunk["choices"] == [] and usage_chunk["object"] == "chat.completion.chunk"
    assert usage_chunk["usage"]["prompt_tokens"] == PROMPT_TOKENS
    assert usage_chunk["usage"]["completion_tokens"] == 4 and usage_chunk["usage"]["total_tokens"] == PROMPT_TOKENS + 4
    assert {c["id"] for c in chunks[:-1]} == {"chatcmpl-fake-request-000001"}
    assert fake.requests[0].operation == "converse-stream"
    assert fake.requests[0].headers["accept"] == "application/vnd.amazon.eventstream"


def test_cache_reads_and_writes_count_as_prompt_tokens_and_reads_as_cached(fake):
    fake.script(
        BedrockScript.usage(inputTokens=10, cacheReadInputTokens=300, cacheWriteInputTokens=50),
        BedrockScript.usage(inputTokens=10, cacheReadInputTokens=300, cacheWriteInputTokens=50),
    )
    usage = chat(route_for(fake), {"model": "m", "messages": MESSAGES})["usage"]
    assert usage["prompt_tokens"] == 360 and usage["total_tokens"] == 364
    assert usage["prompt_tokens_details"] == {"cached_tokens": 300, "cache_write_tokens": 50}
    chunks, _ = stream(route_for(fake), {"model": "m", "messages": MESSAGES})
    assert chunks[-2]["usage"] == usage


def test_reasoning_content_is_relayed_as_reasoning_content(fake):
    fake.script(BedrockScript.with_reasoning("Think first"), BedrockScript.with_reasoning("Think first"))
    message = chat(route_for(fake), {"model": "m", "messages": MESSAGES})["choices"][0]["message"]
    assert message["reasoning_content"] == "Think first" and message["content"] == "Hello from fake Bedrock"
    chunks, _ = stream(route_for(fake), {"model": "m", "messages": MESSAGES})
    assert [d.get("reasoning_content") for d in deltas(chunks)][1:3] == ["Think", " first"]


# ---------------------------------------------------------------- signing


def test_the_fake_verified_the_signature_of_the_url_encoded_model_id(fake):
    chat(route_for(fake), {"model": "m", "messages": MESSAGES})
    stream(route_for(fake), {"model": "m", "messages": MESSAGES})
    for request in fake.requests:
        assert request.signature_valid is True
        assert request.raw_path.startswith("/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/")
        assert request.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIATESTBEDROCK00001/")
        assert "/eu-west-3/bedrock/aws4_request" in request.headers["authorization"]
        assert "x-amz-security-token" not in request.headers


def test_a_wrong_secret_is_refused_by_the_fake_and_is_upstream_auth_failed(fake):
    route = route_for(fake, secret="AKIATESTBEDROCK00001:not-the-secret-key")
    error = upstream_error(lambda: chat(route, {"model": "m", "messages": MESSAGES}))
    assert (error.status, error.code) == (502, "upstream_auth_failed")
    assert "not-the-secret-key" not in str(error)
    assert fake.requests[0].signature_valid is False and fake.requests[0].auth_error == "InvalidSignatureException"


def test_an_unknown_access_key_is_upstream_auth_failed(fake):
    route = route_for(fake, secret="AKIAUNKNOWN:whatever")
    error = upstream_error(lambda: chat(route, {"model": "m", "messages": MESSAGES}))
    assert (error.status, error.code) == (502, "upstream_auth_failed")
    assert fake.requests[0].auth_error == "UnrecognizedClientException"


def test_a_signature_for_another_region_is_refused(fake):
    error = upstream_error(lambda: chat(route_for(fake, region="us-east-1"), {"model": "m", "messages": MESSAGES}))
    assert error.code == "upstream_auth_failed" and fake.requests[0].auth_error == "InvalidSignatureException"


def test_a_session_token_is_sent_signed(fake):
    fake.session_token = "FQoGZXIvYXdzEJr//////////wEaDFakeSessionToken=="
    answer = chat(route_for(fake), {"model": "m", "messages": MESSAGES})
    assert answer["choices"][0]["message"]["content"] == "Hello from fake Bedrock"
    request = fake.requests[0]
    assert request.signature_valid is True
    assert request.headers["x-amz-security-token"] == fake.session_token
    assert "x-amz-security-token" in request.headers["authorization"].split("SignedHeaders=")[1].split(",")[0]


def test_a_missing_session_token_is_refused_when_the_credentials_need_one(fake):
    secret = fake.secret
    fake.session_token = "FakeSessionToken"
    error = upstream_error(lambda: chat(route_for(fake, secret=secret), {"model": "m", "messages": MESSAGES}))
    assert error.code == "upstream_auth_failed" and fake.requests[0].auth_error == "UnrecognizedClientException"


def test_the_fake_checks_that_the_signature_covers_the_body(fake):
    url = f"{fake.base_url}/model/{MODEL.replace(':', '%3A')}/converse"
    signed = orjson.dumps({"messages": [{"role": "user", "content": [{"text": "Hi"}]}]})
    headers = signed_headers(
        Credentials(fake.access_key_id, fake.secret_access_key), "eu-west-3", url, signed, accept="application/json"
    )

    async def send(body: bytes) -> int:
        async with aiohttp.ClientSession() as session:
            async with session.post(URL(url, encoded=True), data=body, headers=headers) as response:
                return response.status

    assert asyncio.run(send(signed)) == 200
    assert asyncio.run(send(signed.replace(b"Hi", b"Yo"))) == 403
    assert [r.signature_valid for r in fake.requests] == [True, False]


def test_probe_tells_a_refused_credential_from_an_accepted_one_without_tokens(fake):
    async def probes(provider: BedrockProvider) -> list[bool | None]:
        return [
            await provider.probe(route_for(fake)),
            await provider.probe(route_for(fake, secret="AKIATESTBEDROCK00001:wrong-secret")),
            await provider.probe(route_for(fake, base_url="http://127.0.0.1:9")),
            await provider.probe(route_for(fake, secret="no-colon")),
        ]

    assert run(probes) == [True, False, None, False]
    assert [r.json for r in fake.requests] == [{"messages": []}] * 2


@pytest.mark.parametrize("secret", ["AKIAONLYKEYID", "AKIATEST:", ":s3cr3tOnly", "", None])
def test_a_malformed_secret_is_provider_misconfigured_without_the_secret(fake, secret):
    route = Route(
        model="aws/claude",
        provider="aws",
        kind="bedrock",
        base_url=fake.base_url,
        region="eu-west-3",
        upstream_model=MODEL,
        credential_id="c",
        secret=secret,
    )
    error = upstream_error(lambda: chat(route, {"model": "m", "messages": MESSAGES}))
    assert (error.status, error.code) == (502, "provider_misconfigured")
    for part in ("AKIAONLYKEYID", "s3cr3tOnly", "AKIATEST"):
        assert part not in str(error)
    assert fake.requests == []


@pytest.mark.parametrize("region", [None, "", "eu-west-3.evil.example/x"])
def test_a_missing_or_bad_region_is_provider_misconfigured(fake, region):
    route = route_for(fake, region=region)
    error = upstream_error(lambda: chat(route, {"model": "m", "messages": MESSAGES}))
    assert (error.status, error.code) == (502, "provider_misconfigured")
    assert fake.secret_access_key not in str(error)
    assert fake.requests == []


# ---------------------------------------------------------------- request translation


def test_system_and_developer_messages_become_system_blocks_and_same_roles_merge(fake):
    body = {
        "model": "m",
        "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "Rule one."}]},
            {"role": "system", "content": "Rule two."},
            {"role": "user", "content": "Hi"},
            {"role": "user", "content": [{"type": "text", "text": "there"}]},
        ],
    }
    chat(route_for(fake), body)
    sent = fake.requests[0].json
    assert sent["system"] == [{"text": "Rule one."}, {"text": "Rule two."}]
    assert sent["messages"] == [{"role": "user", "content": [{"text": "Hi"}, {"text": "there"}]}]


def test_sampling_settings_become_inference_config(fake):
    body = {
        "model": "m",
        "messages": MESSAGES,
        "max_tokens": 50,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["END"],
        "user": "someone",
        "seed": 7,
    }
    chat(route_for(fake), body)
    assert fake.requests[0].json["inferenceConfig"] == {
        "maxTokens": 50,
        "temperature": 0.2,
        "topP": 0.9,
        "stopSequences": ["END"],
    }


def test_a_base64_image_becomes_an_image_block(fake):
    data = base64.b64encode(PNG).decode()
    body = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}", "detail": "low"}},
                ],
            }
        ],
    }
    answer = chat(route_for(fake), body)
    assert fake.requests[0].json["messages"][0]["content"][1] == {"image": {"format": "png", "source": {"bytes": data}}}
    assert answer["usage"]["prompt_tokens"] == len("What is this?") // 4 + 1 + 100


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/cat.png",
        "data:image/bmp;base64,Qk0=",
        "data:image/png,rawbytes",
        "data:image/png;base64,@@@",
    ],
)
def test_an_image_bedrock_cannot_take_is_invalid_before_any_request(fake, url):
    body = {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]}
    with pytest.raises(InvalidRequest) as caught:
        chat(route_for(fake), body)
    assert caught.value.param == "messages.0.content.0"
    assert fake.requests == []


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
    ],
)
def test_what_converse_cannot_express_is_invalid_before_any_request(fake, extra, param):
    with pytest.raises(InvalidRequest) as caught:
        chat(route_for(fake), {"model": "m", "messages": MESSAGES, **extra})
    assert caught.value.param == param
    assert fake.requests == []


def test_json_schema_response_format_becomes_output_config(fake):
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    chat(
        route_for(fake),
        {
            "model": "m",
            "messages": MESSAGES,
            "response_format": {"type": "json_schema", "json_schema": {"name": "thing", "schema": schema}},
        },
    )
    assert fake.requests[0].json["outputConfig"] == {
        "textFormat": {
            "type": "json_schema",
            "structure": {"jsonSchema": {"schema": orjson.dumps(schema).decode(), "name": "thing"}},
        }
    }


# ---------------------------------------------------------------- tools


def test_tool_round_trip_plain(fake):
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [WEATHER],
        "tool_choice": "required",
    }
    first = chat(route_for(fake), body)
    choice = first["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call == {
        "id": "tooluse_fake000001",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"test","unit":"c"}'},
    }
    assert fake.requests[0].json["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "get_weather",
                    "description": "Weather in a city",
                    "inputSchema": {"json": WEATHER["function"]["parameters"]},
                }
            }
        ],
        "toolChoice": {"any": {}},
    }

    follow_up = {
        **body,
        "tool_choice": "auto",
        "messages": [
            *body["messages"],
            choice["message"],
            {"role": "tool", "tool_call_id": call["id"], "content": "18C, sunny"},
        ],
    }
    second = chat(route_for(fake), follow_up)
    assert second["choices"][0]["message"]["content"] == "Hello from fake Bedrock"
    assert second["choices"][0]["finish_reason"] == "stop"
    sent = fake.requests[1].json
    assert sent["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {
                    "toolUse": {
                        "toolUseId": "tooluse_fake000001",
                        "name": "get_weather",
                        "input": {"city": "test", "unit": "c"},
                    }
                }
            ],
        },
        {
            "role": "user",
            "content": [{"toolResult": {"toolUseId": "tooluse_fake000001", "content": [{"text": "18C, sunny"}]}}],
        },
    ]
    assert sent["toolConfig"]["toolChoice"] == {"auto": {}}


def test_consecutive_tool_results_merge_into_one_user_turn(fake):
    calls = [
        {"id": f"call_{i}", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"X"}'}}
        for i in (1, 2)
    ]
    body = {
        "model": "m",
        "tools": [WEATHER],
        "messages": [
            {"role": "user", "content": "Two cities"},
            {"role": "assistant", "content": "Checking.", "tool_calls": calls},
            {"role": "tool", "tool_call_id": "call_1", "content": "10C"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "20C"}]},
            {"role": "user", "content": "Compare them"},
        ],
    }
    chat(route_for(fake), body)
    sent = fake.requests[0].json["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"][0] == {"text": "Checking."}
    assert [next(iter(b)) for b in sent[2]["content"]] == ["toolResult", "toolResult", "text"]


def test_a_history_with_tool_calls_keeps_a_tool_config_when_tools_are_off(fake):
    body = {
        "model": "m",
        "tool_choice": "none",
        "messages": [
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "10C"},
        ],
    }
    answer = chat(route_for(fake), body)
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert fake.requests[0].json["toolConfig"]["tools"][0]["toolSpec"]["name"] == "get_weather"


def test_tool_choice_none_without_history_sends_no_tools(fake):
    answer = chat(route_for(fake), {"model": "m", "messages": MESSAGES, "tools": [WEATHER], "tool_choice": "none"})
    assert "toolConfig" not in fake.requests[0].json
    assert answer["choices"][0]["message"]["content"] == "Hello from fake Bedrock"


def test_tool_call_streamed_after_text_keeps_openai_tool_indexes(fake):
    fake.script(BedrockScript.with_preamble("Let me check."))
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    }
    chunks, failure = stream(route_for(fake), body)
    assert failure is None and chunks[-1] == DONE
    assert fake.requests[0].json["toolConfig"]["toolChoice"] == {"tool": {"name": "get_weather"}}
    seen = deltas(chunks)
    assert "".join(d.get("content") or "" for d in seen) == "Let me check."
    calls = [d["tool_calls"][0] for d in seen if "tool_calls" in d]
    assert calls[0] == {
        "index": 0,
        "id": "tooluse_fake000001",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert {c["index"] for c in calls} == {0} and len(calls) == 1 + 4
    assert orjson.loads("".join(c["function"]["arguments"] for c in calls)) == {"city": "test", "unit": "c"}
    assert chunks[-3]["choices"][0]["finish_reason"] == "tool_calls"
    # "Let me check." is 3 tokens; '{"city":"test","unit":"c"}' streams in 4 eight-character pieces.
    assert chunks[-2]["usage"]["completion_tokens"] == 3 + 4


def test_a_streamed_tool_result_round_trip(fake):
    body = {
        "model": "m",
        "tools": [WEATHER],
        "messages": [
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "call_9",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_9", "content": "-3C"},
        ],
    }
    chunks, failure = stream(route_for(fake), body)
    assert failure is None and chunks[-1] == DONE
    assert "".join(d.get("content") or "" for d in deltas(chunks)) == "Hello from fake Bedrock"
    assert fake.requests[0].json["messages"][2]["content"] == [
        {"toolResult": {"toolUseId": "call_9", "content": [{"text": "-3C"}]}}
    ]


def test_tool_call_arguments_that_are_not_json_are_invalid(fake):
    body = {
        "model": "m",
        "tools": [WEATHER],
        "messages": [
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": "{not json"}}
                ],
            },
        ],
    }
    with pytest.raises(InvalidRequest):
        chat(route_for(fake), body)
    assert fake.requests == []


# ---------------------------------------------------------------- stop reasons


@pytest.mark.parametrize(
    ("settings", "script", "finish"),
    [
        ({}, None, "stop"),
        ({"max_tokens": 2}, None, "length"),
        ({"stop": " fake"}, None, "stop"),
        ({}, BedrockScript.stop("guardrail_intervened"), "content_filter"),
        ({}, BedrockScript.stop("content_filtered"), "content_filter"),
        ({}, BedrockScript.stop("model_context_window_exceeded"), "length"),
        ({"tools": [WEATHER]}, None, "tool_calls"),
    ],
)
def test_stop_reasons_map_to_openai_finish_reasons(fake, settings, script, finish):
    if script is not None:
        fake.script(script, script)
    body = {"model": "m", "messages": MESSAGES, **settings}
    assert chat(route_for(fake), body)["choices"][0]["finish_reason"] == finish
    chunks, _ = stream(route_for(fake), body)
    assert chunks[-3]["choices"][0]["finish_reason"] == finish


def test_max_tokens_and_stop_cut_the_text(fake):
    assert (
        chat(route_for(fake), {"model": "m", "messages": MESSAGES, "max_tokens": 2})["choices"][0]["message"]["content"]
        == "Hello from"
    )
    assert (
        chat(route_for(fake), {"model": "m", "messages": MESSAGES, "stop": [" fake"]})["choices"][0]["message"][
            "content"
        ]
        == "Hello from"
    )
    assert [r.json["inferenceConfig"] for r in fake.requests] == [{"maxTokens": 2}, {"stopSequences": [" fake"]}]


# ---------------------------------------------------------------- errors before the first byte


@pytest.mark.parametrize(
    ("status", "error_type", "expected_status", "expected_code"),
    [
        (429, "ThrottlingException", 429, "upstream_rate_limited"),
        (429, "ModelNotReadyException", 429, "upstream_rate_limited"),
        (500, "InternalServerException", 502, "upstream_error"),
        (424, "ModelErrorException", 502, "upstream_error"),
        (503, "ServiceUnavailableException", 503, "upstream_unavailable"),
        (408, "ModelTimeoutException", 504, "upstream_timeout"),
        (403, "AccessDeniedException", 502, "upstream_auth_failed"),
        (400, "ValidationException", 400, "upstream_rejected_request"),
        (404, "ResourceNotFoundException", 404, "model_not_found"),
    ],
)
def test_bedrock_errors_map_to_honest_statuses(fake, status, error_type, expected_status, expected_code):
    fake.script(BedrockScript.error(status, error_type, "details"), BedrockScript.error(status, error_type, "details"))
    for body in ({"model": "m", "messages": MESSAGES}, {"model": "m", "messages": MESSAGES, "stream": True}):
        error = upstream_error(lambda: chat(route_for(fake), body))
        assert (error.status, error.code) == (expected_status, expected_code)
    if expected_status == 429:
        assert error.retry_after == "1"
    assert error_type in str(error) or "details" in str(error)


def test_a_rejected_request_passes_bedrocks_message_on_without_the_secret(fake):
    fake.script(BedrockScript.error(400, "ValidationException", f"bad input near {fake.secret_access_key}"))
    error = upstream_error(lambda: chat(route_for(fake), {"model": "m", "messages": MESSAGES}))
    assert "bad input near [redacted]" in str(error)
    assert fake.secret_access_key not in str(error)


def test_the_fake_rejects_what_bedrock_would_and_the_caller_sees_400(fake):
    body = {"model": "m", "messages": [{"role": "assistant", "content": "I start"}, {"role": "user", "content": "Hi"}]}
    error = upstream_error(lambda: chat(route_for(fake), body))
    assert error.status == 400 and "must start with a user message" in str(error)


def test_a_slow_provider_is_a_504_and_an_unreachable_one_a_502(fake):
    fake.script(BedrockScript.delay(2))
    error = upstream_error(lambda: chat(route_for(fake), {"model": "m", "messages": MESSAGES}, timeout=0.3))
    assert (error.status, error.code) == (504, "upstream_timeout")
    unreachable = route_for(fake, base_url="http://127.0.0.1:9")
    error = upstream_error(lambda: chat(unreachable, {"model": "m", "messages": MESSAGES}))
    assert (error.status, error.code) == (502, "upstream_unavailable")


def test_a_connection_dropped_before_the_answer_is_upstream_unavailable(fake):
    fake.script(BedrockScript.dropped())
    error = upstream_error(lambda: chat(route_for(fake), {"model": "m", "messages": MESSAGES}))
    assert (error.status, error.code) == (502, "upstream_unavailable")


# ---------------------------------------------------------------- broken streams


@pytest.mark.parametrize("kind", ["throttlingException", "modelStreamErrorException", "internalServerException"])
def test_an_exception_event_mid_stream_is_a_read_failure_not_done(fake, kind):
    fake.script(BedrockScript.exception_event_after(3, kind, "slow down"))
    chunks, failure = stream(route_for(fake), {"model": "m", "messages": MESSAGES})
    assert isinstance(failure, BedrockStreamError) and failure.kind == kind
    assert DONE not in chunks
    assert deltas(chunks) == [{"role": "assistant", "content": ""}, {"content": "Hello"}, {"content": " from"}]


@pytest.mark.parametrize(
    ("script", "failure_type"),
    [
        (BedrockScript.break_stream_after(3), aiohttp.ClientPayloadError),  # TCP connection dropped
        (BedrockScript.end_stream_after(6), MalformedUpstreamAnswer),  # clean end before messageStop
        (BedrockScript.end_stream_after(7), MalformedUpstreamAnswer),  # messageStop but no metadata
        (BedrockScript.end_stream_after(4, partial_event=True), MalformedUpstreamAnswer),  # ends inside a message
    ],
    ids=["dropped", "no-message-stop", "no-metadata", "cut-message"],
)
def test_a_broken_stream_is_a_read_failure_not_done(fake, script, failure_type):
    fake.script(script)
    chunks, failure = stream(route_for(fake), {"model": "m", "messages": MESSAGES})
    assert isinstance(failure, failure_type) and isinstance(failure, READ_FAILURES)
    assert DONE not in chunks
    assert not any(isinstance(c, dict) and c.get("usage") for c in chunks)


# ---------------------------------------------------------------- embeddings


def test_titan_embeddings_become_an_openai_embeddings_document(fake):
    route = route_for(fake, model="amazon.titan-embed-text-v2:0")
    inputs = ["first text", "a second, longer text"]
    document = orjson.loads(
        run(
            lambda p: p.embed(
                route, {"model": "aws/titan", "input": inputs, "dimensions": 256, "encoding_format": "float"}
            )
        )
    )
    assert document["object"] == "list" and document["model"] == "amazon.titan-embed-text-v2:0"
    assert [d["index"] for d in document["data"]] == [0, 1]
    assert document["data"][1]["embedding"] == embedding_vector(inputs[1], 256)
    tokens = sum(len(t) // 4 + 1 for t in inputs)
    assert document["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    assert sorted(r.json["inputText"] for r in fake.requests) == sorted(inputs)
    assert all(r.operation == "invoke" and r.signature_valid and r.json["dimensions"] == 256 for r in fake.requests)


def test_titan_embeddings_in_base64_are_little_endian_float32(fake):
    route = route_for(fake, model="amazon.titan-embed-text-v2:0")
    body = {"model": "m", "input": "hello", "encoding_format": "base64"}
    document = orjson.loads(run(lambda p: p.embed(route, body)))
    raw = base64.b64decode(document["data"][0]["embedding"])
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == embedding_vector("hello", 1024)
    assert "dimensions" not in fake.requests[0].json


def test_embedding_errors_map_like_chat_errors(fake):
    route = route_for(fake, model="amazon.titan-embed-text-v2:0")
    fake.script(BedrockScript.error(429, "ThrottlingException"))
    error = upstream_error(lambda: run(lambda p: p.embed(route, {"model": "m", "input": "x"})))
    assert (error.status, error.code) == (429, "upstream_rate_limited")
    with pytest.raises(InvalidRequest):
        run(lambda p: p.embed(route, {"model": "m", "input": [[1, 2, 3]]}))


# ---------------------------------------------------------------- garbled answers and bugs of ours


def _a_bug(*args: Any, **kwargs: Any) -> Any:
    raise KeyError("a bug in our translation")


@pytest.mark.parametrize(
    "answer",
    [
        "not an object",
        {"output": {"message": {"content": "not blocks"}}, "stopReason": "end_turn", "usage": {}},
        {"output": {"message": {"content": []}}, "usage": {}},  # no stopReason
        {"output": {"message": {"content": ["not a block"]}}, "stopReason": "end_turn", "usage": {}},
        {"output": {"message": {"content": [{"toolUse": {"input": {}}}]}}, "stopReason": "tool_use", "usage": {}},
        {"output": {"message": {"content": [{"reasoningContent": 5}]}}, "stopReason": "end_turn", "usage": {}},
    ],
)
def test_a_converse_answer_bedrock_garbled_is_a_malformed_answer(answer):
    with pytest.raises(MalformedUpstreamAnswer):
        bedrock_response.completion_document(answer, completion_id="c", model="m", created=1)


@pytest.mark.parametrize(
    ("event_type", "event"),
    [
        ("contentBlockStart", {"start": {"toolUse": {"toolUseId": "t", "name": "f"}}}),  # no contentBlockIndex
        ("contentBlockStart", {"contentBlockIndex": 0, "start": "not an object"}),
        ("contentBlockDelta", {"contentBlockIndex": 0}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"toolUse": {"input": "{}"}}}),  # never started
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": "not an object"}}),
        ("messageStop", {}),
        ("metadata", {"usage": "not an object"}),
    ],
)
def test_a_converse_stream_event_bedrock_garbled_is_a_malformed_answer(event_type, event):
    translator = bedrock_response.ConverseStreamTranslator(completion_id="c", model="m", created=1)
    with pytest.raises(MalformedUpstreamAnswer):
        translator.chunks(event_type, event)


def test_a_bug_in_our_converse_translation_propagates_and_is_no_read_failure(monkeypatch):
    monkeypatch.setattr(bedrock_response.ConverseStreamTranslator, "_choice", _a_bug)
    translator = bedrock_response.ConverseStreamTranslator(completion_id="c", model="m", created=1)
    with pytest.raises(KeyError) as raised:
        translator.chunks("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "hi"}})
    assert not isinstance(raised.value, READ_FAILURES)
