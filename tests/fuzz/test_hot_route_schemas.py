"""The hot routes' request schemas (adapters/http/schemas.py) say what their parsers accept:
every body generated from a schema passes the gateway's own checks, so a client or fuzzer
built from ``/openapi.json`` is not refused for a body the document allows."""

import json
from typing import Any

import hypothesis
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from adapters.http.bodies import json_object
from adapters.http.chat_request import parse_chat_request
from adapters.http.count_tokens import shape_of
from adapters.http.embeddings import parse_embeddings_request
from adapters.http.messages_translate import chat_body_from_messages
from adapters.http.responses import chat_request_of
from adapters.http.schemas import COMPONENTS, HOT_ROUTES
from domain.errors import InvalidRequest
from tests.fuzz.conftest import fuzz_examples, fuzz_seed

PARSERS = {
    "/v1/chat/completions": lambda raw: parse_chat_request(raw),
    "/v1/embeddings": lambda raw: parse_embeddings_request(raw),
    # as adapters/http/messages.py reads it
    "/v1/messages": lambda raw: parse_chat_request(orjson.dumps(chat_body_from_messages(json_object(raw)))),
    "/v1/messages/count_tokens": lambda raw: shape_of(json_object(raw), None),  # adapters/http/count_tokens.py
    "/v1/responses": lambda raw: chat_request_of(json_object(raw), [], None),  # as adapters/http/responses.py
}


def _document() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for (method, path), operation in HOT_ROUTES.items():
        paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "hot routes", "version": "1"},
        "paths": paths,
        "components": {"schemas": COMPONENTS},
    }


SCHEMA = schemathesis.openapi.from_dict(_document())


def _integral(value: Any) -> Any:
    """JSON Schema counts 633.0 as an integer; JSON clients send 633. Normalise to that."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, list):
        return [_integral(item) for item in value]
    if isinstance(value, dict):
        return {key: _integral(item) for key, item in value.items()}
    return value


@pytest.mark.parametrize("path", PARSERS)
def test_every_body_the_schema_allows_passes_the_parser(path: str) -> None:
    operation = next(result.ok() for result in SCHEMA.get_all_operations() if result.ok().path == path)

    @hypothesis.seed(fuzz_seed())
    @settings(
        max_examples=fuzz_examples(60),
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        raw = json.dumps(_integral(case.body)).encode()
        try:
            PARSERS[path](raw)
        except InvalidRequest as refused:
            raise AssertionError(f"the schema allows a body the parser refuses ({refused}): {raw[:500]!r}") from None

    run()


def test_the_document_keeps_its_schemas_for_the_hot_routes() -> None:
    assert {path for _, path in HOT_ROUTES} == set(PARSERS)
    for name in ("ChatCompletionRequest", "MessagesRequest", "EmbeddingsRequest", "OpenAIError", "AnthropicError"):
        assert name in COMPONENTS
