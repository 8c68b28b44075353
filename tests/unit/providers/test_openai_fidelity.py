"""Anthropic's conventions (``cache_control`` marks, ``thinking_blocks``) on the way to an
OpenAI-family upstream: OpenAI's own API caches by itself and knows neither, so kind
``openai`` gets them stripped; any other base URL (OpenRouter and LiteLLM honour them) gets
the body as sent. Real HTTP to the fake OpenAI upstream, which records what it received."""

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest

from adapters.providers.fidelity import without_anthropic_conventions
from adapters.providers.openai_compatible import OpenAICompatibleProvider
from application.routing import Route
from tests.fakes.openai_upstream import FakeOpenAIUpstream

KEY = "sk-fidelity-openai-0001"
MARK = {"type": "ephemeral"}
MARKED = {
    "model": "m",
    "messages": [
        {"role": "system", "content": [{"type": "text", "text": "Rules", "cache_control": MARK}]},
        {"role": "user", "content": "Hi", "cache_control": MARK},
        {
            "role": "assistant",
            "content": "Hello",
            "thinking_blocks": [{"type": "thinking", "thinking": "t", "signature": "s"}],
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}, "cache_control": MARK}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
    ],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}, "cache_control": MARK}],
}


@pytest.fixture(scope="module")
def upstream():
    with FakeOpenAIUpstream(api_key=KEY) as server:
        yield server


def send(upstream: FakeOpenAIUpstream, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    route = Route(
        model="p/gpt-4o-mini",
        provider="p",
        kind=kind,
        base_url=upstream.base_url,
        region=None,
        upstream_model="gpt-4o-mini",
        credential_id="cred-1",
        secret=KEY,
    )

    async def main() -> dict[str, Any]:
        async with aiohttp.ClientSession() as session:
            exchange = await OpenAICompatibleProvider(session, timeout_seconds=5).start_chat(route, body)
            try:
                return orjson.loads(await exchange.read_completion())
            finally:
                exchange.release()

    asyncio.run(main())
    return upstream.requests[-1].json


def test_openai_gets_no_cache_marks_or_thinking_blocks(upstream):
    sent = send(upstream, "openai", MARKED)
    assert "cache_control" not in orjson.dumps(sent).decode()
    assert "thinking_blocks" not in sent["messages"][2]
    assert sent["messages"][0]["content"] == [{"type": "text", "text": "Rules"}]
    assert sent["messages"][2]["tool_calls"][0]["function"]["name"] == "f"
    assert MARKED["messages"][1]["cache_control"] == MARK  # the caller's body is not changed


def test_another_openai_compatible_base_url_gets_them_as_sent(upstream):
    sent = send(upstream, "openai-compatible", MARKED)
    assert sent["messages"] == MARKED["messages"] and sent["tools"] == MARKED["tools"]


def test_a_body_without_them_is_passed_on_without_a_copy():
    body = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}], "tools": []}
    assert without_anthropic_conventions(body) is body
