"""``POST /v1/embeddings``: billed per input token, through any provider whose adapter
embeds (OpenAI and compatible, Gemini, Bedrock, Ollama). Adapters answer with OpenAI's
embeddings document, which is passed to the caller as it is."""

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from adapters.http.bodies import with_model
from adapters.http.calls import billed_document
from adapters.http.chat_request import tags_header
from adapters.http.services import bearer_token, read_body, services_of
from application.billing import RequestShape
from application.calls import embed
from domain.attribution import parse_attribution
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
    shape = RequestShape(
        model=body["model"],
        prompt_bytes=len(raw),
        max_output_tokens=0,
        choices=1,
        stream=False,
        endpoint="embeddings",
        attribution=parse_attribution(body.get("user"), tags=tags_header(request)),
    )
    return await billed_document(
        services, request, api_key, shape, embed, body, lambda document: _usage(document, body)
    )


def parse_embeddings_request(raw: bytes) -> dict[str, Any]:
    body = with_model(raw)
    inputs = body.get("input")
    valid = isinstance(inputs, str) or (
        isinstance(inputs, list)
        and inputs
        and all(
            isinstance(item, (str, int)) or (isinstance(item, list) and all(isinstance(t, int) for t in item))
            for item in inputs
        )
    )
    if not valid:
        raise InvalidRequest("'input' must be a string, an array of strings, or token arrays", param="input")
    return body


def _usage(document: dict[str, Any], body: dict[str, Any]) -> Usage:
    reported = document.get("usage")
    usage: dict[str, Any] = reported if isinstance(reported, dict) else {}
    tokens = usage.get("prompt_tokens")
    if isinstance(tokens, int) and tokens >= 0 and usage.get("usage_source") != "estimated":
        return Usage(input_tokens=tokens)
    if isinstance(tokens, int) and tokens >= 0:
        return Usage(input_tokens=tokens, source="estimated")
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    chars = sum(
        len(item) if isinstance(item, str) else len(item) * 4 if isinstance(item, list) else 4 for item in inputs
    )
    return Usage(input_tokens=tokens_for_chars(chars), source="estimated")
