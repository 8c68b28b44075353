"""What the fuzzing found, each pinned by a plain test so it stays fixed."""

import json
from typing import Any

import pytest

from application.event_scan import scan
from application.verify import HOLD_PLACED
from domain.errors import InvalidRequest
from tests.fuzz.conftest import ACCOUNT, FuzzGateway
from tests.fuzz.strategies import VALID


def _holds_placed(gateway: FuzzGateway) -> int:
    return len(list(scan(gateway.services.ledger.recorder, [HOLD_PLACED])))


@pytest.mark.parametrize("path", list(VALID))
def test_a_body_nested_too_deep_to_forward_is_refused_before_any_hold(fuzz_gateway: FuzzGateway, path: str) -> None:
    """Content nested 300 levels parsed (orjson reads 1,024) but could not be written for the
    provider (orjson writes 254): a 500 after the hold was placed."""
    deep: Any = "Hello"
    for _ in range(300):
        deep = [deep]
    field, value = ("input", deep) if path == "/v1/embeddings" else ("messages", [{"role": "user", "content": deep}])
    holds_before = _holds_placed(fuzz_gateway)
    fuzz_gateway.upstream.reset()
    response = fuzz_gateway.client.post(
        path, content=json.dumps({**VALID[path], field: value}).encode(), headers=fuzz_gateway.auth("user")
    )
    assert response.status_code == 400, response.text
    assert "nested more than 254 levels" in response.text
    assert _holds_placed(fuzz_gateway) == holds_before and not fuzz_gateway.upstream.requests


def test_a_body_nested_as_deep_as_can_be_forwarded_is_served(fuzz_gateway: FuzzGateway) -> None:
    deep: Any = "Hello"
    for _ in range(200):
        deep = [deep]
    body = {**VALID["/v1/chat/completions"], "metadata": deep}  # passed through to the provider as sent
    response = fuzz_gateway.client.post(
        "/v1/chat/completions", content=json.dumps(body).encode(), headers=fuzz_gateway.auth("user")
    )
    assert response.status_code != 500 and "nested more than" not in response.text, response.text


@pytest.mark.parametrize("route", ["/keys/{key}/rotate", "/providers/openai/credentials/rotate"])
def test_a_grace_period_too_long_for_a_timedelta_is_a_400(fuzz_gateway: FuzzGateway, route: str) -> None:
    """grace_seconds 2254753275633120509771644928 overflowed timedelta: a 500."""
    key = fuzz_gateway.services.api_keys.issue_api_key(ACCOUNT, name="grace").key_id
    body: dict[str, Any] = {"grace_seconds": 2254753275633120509771644928}
    if "credentials" in route:
        body["api_key"] = "sk-new-upstream-secret-0000"
    response = fuzz_gateway.client.post(
        "/admin/v1" + route.format(key=key), json=body, headers=fuzz_gateway.auth("admin")
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "grace_seconds"


def test_a_messages_tool_choice_whose_type_is_not_text_is_a_400(fuzz_gateway: FuzzGateway) -> None:
    """tool_choice {"type": {}} made the Messages translation look a dict up in a dict: a 500."""
    body = {
        **VALID["/v1/messages"],
        "tools": [{"name": "look", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": {}},
    }
    response = fuzz_gateway.client.post("/v1/messages", json=body, headers=fuzz_gateway.auth("user"))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("tools", [True, 7, "look", [1], [None]])
def test_tools_that_are_not_an_array_of_objects_are_refused_before_any_hold(
    fuzz_gateway: FuzzGateway, tools: Any
) -> None:
    """Gemini's translation iterated them: a 500 after the hold for a Gemini model."""
    holds_before = _holds_placed(fuzz_gateway)
    fuzz_gateway.upstream.reset()
    response = fuzz_gateway.client.post(
        "/v1/chat/completions",
        json={**VALID["/v1/chat/completions"], "tools": tools},
        headers=fuzz_gateway.auth("user"),
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "tools", response.text
    assert _holds_placed(fuzz_gateway) == holds_before and not fuzz_gateway.upstream.requests


@pytest.mark.parametrize(
    "provider, body",
    [
        ("gemini", {"messages": [{"role": "assistant", "content": None, "tool_calls": ["look"]}]}),
        ("gemini", {"messages": [{"role": "assistant", "content": None, "tool_calls": 5}]}),
        (
            "gemini",
            {
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": "f"}],
                "tool_choice": "auto",
            },
        ),
        (
            "gemini",
            {
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": 3}},
            },
        ),
        (
            "bedrock",
            {
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": {"type": "function", "function": ["f"]},
            },
        ),
        (
            "ollama",
            {
                "messages": [{"role": "user", "content": "hi"}],
                "response_format": {"type": "json_schema", "json_schema": ["s"]},
            },
        ),
    ],
)
def test_provider_translations_refuse_misshapen_parts_with_a_400(provider: str, body: dict[str, Any]) -> None:
    """Each raised AttributeError/TypeError (a 500 after the hold) on a part of another type."""
    from tests.fuzz.test_provider_translation import CHAT_TRANSLATIONS

    with pytest.raises(InvalidRequest):
        CHAT_TRANSLATIONS[provider]({"model": "p/m", **body})
