"""``POST /v1/images/generations``: billed per image (and per token where the model
reports tokens, as gpt-image models do), through providers whose adapter generates
images (OpenAI and compatible). The hold covers ``n`` images at the model's price."""

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from adapters.http.bodies import with_model
from adapters.http.calls import billed_document
from adapters.http.chat_request import tags_header
from adapters.http.services import bearer_token, read_body, services_of
from application.billing import RequestShape
from application.calls import generate_images as generate
from domain.attribution import parse_attribution
from domain.errors import InvalidRequest
from domain.usage import Usage

router = APIRouter()
MAX_IMAGES = 10


@router.post("/v1/images/generations")
async def generate_images(request: Request) -> Response:
    services = services_of(request)
    api_key = bearer_token(request)
    raw = await read_body(request, services.settings.max_body_bytes)
    body = parse_images_request(raw)
    images = body.get("n") or 1
    # image models that report tokens (gpt-image) spend output tokens per image: the model's cap each
    shape = RequestShape(
        model=body["model"],
        prompt_bytes=len(raw),
        max_output_tokens=None,
        choices=images,
        stream=False,
        endpoint="images.generations",
        images=images,
        attribution=parse_attribution(body.get("user"), tags=tags_header(request)),
    )
    return await billed_document(services, request, api_key, shape, generate, body, _usage)


def parse_images_request(raw: bytes) -> dict[str, Any]:
    body = with_model(raw)
    if not isinstance(body.get("prompt"), str) or not body["prompt"]:
        raise InvalidRequest("you must provide a prompt", param="prompt")
    n = body.get("n")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_IMAGES):
        raise InvalidRequest(f"'n' must be an integer between 1 and {MAX_IMAGES}", param="n")
    return body


def _usage(document: dict[str, Any]) -> Usage:
    """Images delivered, plus tokens when the provider reports them (gpt-image models)."""
    data = document.get("data")
    images = len(data) if isinstance(data, list) else 0
    reported = document.get("usage")
    usage: dict[str, Any] = reported if isinstance(reported, dict) else {}
    return Usage(
        input_tokens=_tokens(usage, "input_tokens"), output_tokens=_tokens(usage, "output_tokens"), images=images
    )


def _tokens(usage: dict[str, Any], name: str) -> int:
    """A reported token count; 0 when missing, not an integer, or negative."""
    count = usage.get(name)
    return max(count, 0) if isinstance(count, int) else 0
