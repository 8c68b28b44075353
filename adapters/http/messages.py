"""``POST /v1/messages``: Anthropic's Messages API as an ingress, so the official
``anthropic`` SDK works against Tallyhub and reaches any provider.

The request is translated to the gateway's chat format and runs through exactly the
chat pipeline (billing, routing, failover, relaying); the answer is translated back
(adapters/http/messages_translate.py) — a plain answer before it is charged, so an answer
that cannot be translated is the provider's failure (502, nothing charged), and a stream's
chunks only once the relay has checked their shape. Errors use Anthropic's shape
``{"type": "error", "error": {"type", "message"}}`` with the same honest statuses.
Callers authenticate with ``x-api-key`` or ``Authorization: Bearer``.
"""

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from adapters.http.bodies import json_object
from adapters.http.calls import request_id_of
from adapters.http.chat import complete_answer, relay, stream_headers, upstream_body
from adapters.http.chat_request import ChatRequest, parse_chat_request, tags_header
from adapters.http.disconnect import CallerWatch
from adapters.http.errors import ANSWERED_ERRORS, error_message, response_for
from adapters.http.event_stream import EventStreamResponse
from adapters.http.messages_translate import (
    MessagesStreamTranslator,
    anthropic_error_body,
    chat_body_from_messages,
    error_event,
    message_from_completion,
    message_with_usage,
    sse_event,
)
from adapters.http.receipts import receipt_headers, receipt_usage
from adapters.http.services import read_body, services_of
from adapters.providers.base import ChatExchange
from application.calls import BilledCalls, StartedCall
from domain.errors import AuthenticationFailed

router = APIRouter()


@router.post("/v1/messages")
async def create_message(request: Request) -> Response:
    try:
        return await _create_message(request)
    except ANSWERED_ERRORS as exc:
        return anthropic_error(exc)


async def _create_message(request: Request) -> Response:
    services = services_of(request)
    api_key = caller_api_key(request)
    raw = await read_body(request, services.settings.max_body_bytes)
    chat = parse_chat_request(
        orjson.dumps(chat_body_from_messages(json_object(raw))), tags_header(request), endpoint="messages"
    )
    opened = await services.calls.open(api_key, chat.shape, request_id_of(request))
    if chat.shape.stream:
        call = await services.calls.start_chat(opened, upstream_body(chat))
        return EventStreamResponse(_events(services.calls, call, chat), headers=stream_headers(opened))
    # Translated before the charge: an answer that cannot be translated is the provider's
    # garbled answer (a 502, nothing charged), never a 500 after the caller was charged.
    with CallerWatch(request.receive) as watch:  # a caller gone before the answer: a 499, nothing charged
        call = await services.calls.start_chat(opened, upstream_body(chat))
        translated = _translated(chat.shape.model)
        (message, upstream_usage), receipt = await complete_answer(services.calls, call, translated, watch)
    message = message_with_usage(message, receipt_usage(receipt, upstream_usage))
    return Response(orjson.dumps(message), media_type="application/json", headers=receipt_headers(receipt, opened))


def _translated(model: str) -> Callable[[bytes, dict[str, Any]], tuple[dict[str, Any], dict[str, Any] | None]]:
    """The Anthropic message of a completion, and the completion's own usage object (for the
    receipt; None when it sent none, or garbage: then the receipt's own figures are shown)."""

    def translate(_: bytes, completion: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        usage = completion.get("usage")
        return message_from_completion(completion, model), usage if isinstance(usage, dict) else None

    return translate


async def _events(calls: BilledCalls, call: StartedCall[ChatExchange], chat: ChatRequest) -> AsyncIterator[bytes]:
    """The chat relay's frames, as Anthropic's event stream (billed by the relay's meter)."""
    translator = MessagesStreamTranslator(chat.shape.model)
    # closed as soon as this stops reading it, so its upstream connection is released then,
    # not when the generator is collected
    async with aclosing(relay(calls, call, chat)) as pieces:
        async for piece in pieces:
            for frame in piece.split(b"\n\n"):  # a piece holds one or more whole frames
                payload = frame.removeprefix(b"data: ").strip()
                if not payload:
                    continue
                if payload == b"[DONE]":
                    for name, data in translator.finish():
                        yield sse_event(name, data)
                    return
                chunk: dict[str, Any] = orjson.loads(payload)
                if "error" in chunk:  # the relay's error frame: the call is already billed as broken
                    error = chunk["error"]
                    message = error.get("message") if isinstance(error, dict) else None
                    yield sse_event(*error_event(message if isinstance(message, str) else "the provider failed"))
                    return
                for name, data in translator.feed(chunk):
                    yield sse_event(name, data)


def caller_api_key(request: Request) -> str:
    """The key from ``x-api-key`` (Anthropic's header) or ``Authorization: Bearer``."""
    key = request.headers.get("x-api-key", "").strip()
    if key:
        return key
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    raise AuthenticationFailed("missing API key: send 'x-api-key: <key>' or 'Authorization: Bearer <key>'")


def anthropic_error(exc: Exception) -> Response:
    """The OpenAI-shaped error's status and headers, with Anthropic's body."""
    openai_shaped = response_for(exc)
    headers = {k: v for k, v in openai_shaped.headers.items() if k == "retry-after" or k.startswith("x-ratelimit-")}
    message, topup_url = error_message(exc)  # a 402's top-up link (TALLYHUB_TOPUP_URL), as in OpenAI's shape
    body = anthropic_error_body(openai_shaped.status_code, message)
    if topup_url is not None:
        body["error"]["topup_url"] = topup_url
    return Response(
        orjson.dumps(body),
        status_code=openai_shaped.status_code,
        media_type="application/json",
        headers=headers,
    )
