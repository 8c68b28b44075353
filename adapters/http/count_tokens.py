"""``POST /v1/messages/count_tokens``: Anthropic's token counting, so the ``anthropic``
SDK's ``client.messages.count_tokens(...)`` works against Tallyhub for any model the key
may use (application/token_count.py: the provider's count for Anthropic models, the
gateway's estimate for the others; never charged).

The body is a Messages request without ``max_tokens``; it is checked and shaped as
``/v1/messages`` checks it, and answered ``{"input_tokens": N}``, with ``"estimated": true``
when the gateway estimated it. ``x-tallyhub-usage-source`` says ``provider`` or
``estimated`` either way. Authentication and errors are ``/v1/messages``' (adapters/http/messages.py).
"""

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from adapters.http.bodies import json_object
from adapters.http.calls import request_id_of
from adapters.http.chat_request import parse_chat_request, tags_header
from adapters.http.errors import ANSWERED_ERRORS
from adapters.http.messages import anthropic_error, caller_api_key
from adapters.http.messages_translate import chat_body_from_messages
from adapters.http.rate_limit_headers import opened_rate_limit_headers
from adapters.http.services import read_body, services_of
from application.billing import RequestShape
from application.token_count import TokenCount

router = APIRouter()
ENDPOINT = "messages.count_tokens"
# What a Messages body has that counting ignores (the chat body's, from the translation).
NOT_COUNTED = ("max_tokens", "stream", "stream_options")


@router.post("/v1/messages/count_tokens")
async def count_tokens(request: Request) -> Response:
    try:
        return await _count_tokens(request)
    except ANSWERED_ERRORS as exc:
        return anthropic_error(exc)


async def _count_tokens(request: Request) -> Response:
    services = services_of(request)
    api_key = caller_api_key(request)
    body = json_object(await read_body(request, services.settings.max_body_bytes))
    counted = await services.token_counts.count(
        api_key, shape_of(body, tags_header(request)), body, request_id_of(request)
    )
    return render(counted)


def shape_of(body: dict[str, Any], tags: str | None) -> RequestShape:
    """The request's shape as /v1/messages sees it (its checks and its prompt bound),
    without an output: a count has none. Raises InvalidRequest."""
    chat = chat_body_from_messages({**body, "max_tokens": 1})
    for name in NOT_COUNTED:
        chat.pop(name, None)
    return parse_chat_request(orjson.dumps(chat), tags, endpoint=ENDPOINT).shape


def render(counted: TokenCount) -> Response:
    answer: dict[str, object] = {"input_tokens": counted.input_tokens}
    if counted.source != "provider":
        answer["estimated"] = True
    headers = {"x-tallyhub-usage-source": counted.source}
    if counted.opened.rate_limit is not None:
        headers.update(opened_rate_limit_headers(counted.opened))
    return Response(orjson.dumps(answer), media_type="application/json", headers=headers)
