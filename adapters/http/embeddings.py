"""``POST /v1/embeddings``: billed per input token, through any provider whose adapter
embeds (OpenAI and compatible, Gemini, Bedrock, Ollama). Adapters answer with OpenAI's
embeddings document, which is passed to the caller as it is."""

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from adapters.http.calls import complete, open_request, parsed_document, start_call
from adapters.http.receipts import receipt_headers
from adapters.http.services import bearer_token, read_body, services_of
from application.billing import RequestShape
from application.routing import Route
from domain.errors import InvalidRequest
from domain.estimation import tokens_for_chars
from domain.usage import Usage

router = APIRouter()


@router.post("/v1/embeddings")
async def create_embeddings(request: Request) -> Response:
    services = services_of(request)
    api_key = bearer_token(request)
    raw = await read_body(request, services.settings.max_body_bytes)
    body = parse_embeddings_request(raw)
    shape = RequestShape(model=body["model"], prompt_bytes=len(raw), max_output_tokens=0, choices=1, stream=False,
                         endpoint="embeddings")
    opened = await open_request(services, request, api_key, shape)
    call = await start_call(services, opened, lambda adapter, route: _embed(adapter, route, body))
    document = await parsed_document(services, call)
    receipt = await complete(services, call, _usage(document, body), ttfb_ms=None)
    return Response(call.result, media_type="application/json", headers=receipt_headers(receipt))


def parse_embeddings_request(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequest("you must provide a model parameter", param="model")
    inputs = body.get("input")
    valid = isinstance(inputs, str) or (isinstance(inputs, list) and inputs and all(
        isinstance(item, (str, int)) or (isinstance(item, list) and all(isinstance(t, int) for t in item))
        for item in inputs))
    if not valid:
        raise InvalidRequest("'input' must be a string, an array of strings, or token arrays", param="input")
    return body


async def _embed(adapter: Any, route: Route, body: dict[str, Any]) -> bytes:
    embed = getattr(adapter, "embed", None)
    if embed is None:
        raise InvalidRequest(f"provider {route.provider!r} ({route.kind}) does not offer embeddings", param="model")
    return await embed(route, body)


def _usage(document: dict[str, Any], body: dict[str, Any]) -> Usage:
    usage = document.get("usage") if isinstance(document.get("usage"), dict) else {}
    tokens = usage.get("prompt_tokens")
    if isinstance(tokens, int) and tokens >= 0 and usage.get("usage_source") != "estimated":
        return Usage(input_tokens=tokens)
    if isinstance(tokens, int) and tokens >= 0:
        return Usage(input_tokens=tokens, source="estimated")
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    chars = sum(len(item) if isinstance(item, str) else len(item) * 4 if isinstance(item, list) else 4 for item in inputs)
    return Usage(input_tokens=tokens_for_chars(chars), source="estimated")
