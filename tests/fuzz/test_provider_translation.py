"""The provider adapters' request translations (Anthropic, Gemini, Bedrock, Ollama) get every
chat or embeddings body the gateway itself accepts and forwards: each must translate it, or
refuse it with the gateway's InvalidRequest (a 400), and what it builds must serialise.
Any other exception is a 500 after the request's hold was placed. The in-process gateway of
the other fuzz tests has only an OpenAI provider, so these run the translations directly."""

import copy
import json
from collections.abc import Callable
from typing import Any

import hypothesis
import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from adapters.http.chat_request import parse_chat_request
from adapters.http.embeddings import parse_embeddings_request
from adapters.providers.anthropic_request import messages_request
from adapters.providers.bedrock import _embedding_request as bedrock_embedding_request
from adapters.providers.bedrock_request import converse_request
from adapters.providers.gemini import _embedding_inputs as gemini_embedding_inputs
from adapters.providers.gemini_request import gemini_request
from adapters.providers.ollama import chat_request as ollama_chat_request
from adapters.providers.ollama import embed_request as ollama_embed_request
from domain.errors import TallyhubError
from tests.fuzz.conftest import fuzz_examples, fuzz_seed
from tests.fuzz.strategies import JSON_VALUES, bodies

CHAT_TRANSLATIONS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "anthropic": lambda body: messages_request(body, "claude-sonnet-4"),
    "gemini": gemini_request,
    "bedrock": converse_request,
    "ollama": lambda body: ollama_chat_request("llama3", body),
}
EMBEDDING_TRANSLATIONS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "gemini": lambda body: gemini_embedding_inputs(body.get("input")),
    "bedrock": bedrock_embedding_request,
    "ollama": lambda body: ollama_embed_request("nomic-embed-text", body),
}


# A chat body that uses every feature a translation handles; the fuzz replaces parts of it.
RICH_CHAT: dict[str, Any] = {
    "model": "p/m",
    "messages": [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "look", "arguments": '{"q": 1}'}}],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
        {"role": "user", "content": "Thanks", "name": "ann"},
    ],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "look",
                "description": "d",
                "parameters": {"type": "object", "properties": {"q": {"type": "integer"}}, "required": ["q"]},
            },
        }
    ],
    "tool_choice": {"type": "function", "function": {"name": "look"}},
    "response_format": {"type": "json_schema", "json_schema": {"name": "o", "schema": {"type": "object"}}},
    "stop": ["END"],
    "temperature": 0.5,
    "top_p": 0.9,
    "max_tokens": 100,
    "seed": 3,
    "user": "u1",
    "reasoning_effort": "low",
    "parallel_tool_calls": False,
}


def _places(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    places = [at] if at else []
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        places += _places(child, (*at, key))
    return places


@st.composite
def rich_chat_bodies(draw: st.DrawFn) -> bytes:
    """RICH_CHAT with one to three of its parts (any depth) replaced by anything JSON holds."""
    body = copy.deepcopy(RICH_CHAT)
    for _ in range(draw(st.integers(1, 3))):
        *parents, last = draw(st.sampled_from(_places(body)))
        holder = body
        for key in parents:
            holder = holder[key]
        holder[last] = draw(JSON_VALUES)
    return json.dumps(body).encode()


def _forwarded(raw: bytes, parse: Callable[[bytes], Any]) -> dict[str, Any] | None:
    """The body as the gateway forwards it, or None when the gateway refuses it first."""
    try:
        parsed = parse(raw)
    except TallyhubError:
        return None
    return parsed.body if hasattr(parsed, "body") else parsed


def _check(translate: Callable[[dict[str, Any]], Any], body: dict[str, Any]) -> None:
    try:
        built = translate(body)
    except TallyhubError:
        return  # refused with a 400 naming the field: fine
    except Exception as exc:
        raise AssertionError(f"{type(exc).__name__}: {exc} for {orjson.dumps(body)[:600]!r}") from exc
    try:
        orjson.dumps(built)
    except TypeError as exc:
        raise AssertionError(f"the translation cannot be sent ({exc}) for {orjson.dumps(body)[:300]!r}") from exc


def _run(path: str, parse: Callable[[bytes], Any], translate: Callable[[dict[str, Any]], Any]) -> None:
    raws = st.one_of(bodies(path), rich_chat_bodies()) if path == "/v1/chat/completions" else bodies(path)

    @hypothesis.seed(fuzz_seed())
    @settings(
        max_examples=fuzz_examples(150),
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(raw=raws)
    def run(raw: bytes) -> None:
        body = _forwarded(raw, parse)
        if body is not None:
            _check(translate, body)

    run()


@pytest.mark.parametrize("provider", CHAT_TRANSLATIONS)
def test_every_forwarded_chat_body_is_translated_or_refused_with_a_400(provider: str) -> None:
    _run("/v1/chat/completions", parse_chat_request, CHAT_TRANSLATIONS[provider])


@pytest.mark.parametrize("provider", EMBEDDING_TRANSLATIONS)
def test_every_forwarded_embeddings_body_is_translated_or_refused_with_a_400(provider: str) -> None:
    _run("/v1/embeddings", parse_embeddings_request, EMBEDDING_TRANSLATIONS[provider])
