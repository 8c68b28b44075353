"""``POST /v1/responses``: OpenAI's Responses API as an ingress, so the official ``openai``
SDK's ``responses.create`` / ``responses.stream`` work against Tallyhub and reach any provider.

The request is translated to the gateway's chat format and runs through exactly the chat
pipeline (holds, limits, spend caps, routing, failover, relaying, the charge); the answer is
translated back (adapters/http/responses_translate.py) — a plain answer before it is charged,
so an answer that cannot be translated is the provider's failure (502, nothing charged), and
a stream's chunks only once the relay has checked their shape. Errors are OpenAI's shape.

Storage (application/stored_responses.py, ``TALLYHUB_RESPONSES_STORE=on``): a
``previous_response_id`` is resolved for the key's account before anything is held, and its
conversation goes before the input; a finished answer is kept (before a plain answer is sent,
before a stream's ``response.completed``) unless the caller sent ``store: false``. With storage
off the response says ``store: false``, and when the caller asked for storing the header
``x-tallyhub-responses-store: off`` says so.
"""

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import replace
from typing import Any
from uuid import UUID

import anyio
import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from adapters.http.bodies import json_object
from adapters.http.calls import request_id_of
from adapters.http.chat import complete_answer, relay, stream_headers, upstream_body
from adapters.http.chat_request import ChatRequest, parse_chat_request, tags_header
from adapters.http.disconnect import CallerWatch
from adapters.http.event_stream import EventStreamResponse
from adapters.http.receipts import receipt_headers, receipt_usage
from adapters.http.responses_translate import (
    ResponsesStreamTranslator,
    attribution_user,
    chat_body_from_responses,
    input_items,
    output_as_input,
    response_from_completion,
    response_skeleton,
    response_with_usage,
    sse_event,
    wants_store,
)
from adapters.http.services import bearer_token, read_body, services_of
from adapters.providers.base import ChatExchange
from adapters.services import Services
from application.calls import BilledCalls, StartedCall
from application.stored_responses import StoredResponses
from domain.attribution import parse_attribution
from domain.errors import InvalidRequest

router = APIRouter()
log = logging.getLogger("tallyhub.responses")
STORE_HEADER = "x-tallyhub-responses-store"


class _Storing:
    """Where a response goes once answered: the store (None: not kept), the account and the
    conversation before this response (earlier items and this request's input)."""

    def __init__(self, store: StoredResponses | None, account_id: UUID | None, items: list[dict[str, Any]]) -> None:
        self.store = store
        self.account_id = account_id
        self.items = items

    async def keep(self, response: dict[str, Any]) -> None:
        """Keep ``response`` when storing, and say in it whether it was kept. A store that
        fails does not fail the answer the caller was charged for: it says ``store: false``."""
        if self.store is None or self.account_id is None:
            response["store"] = False
            return
        try:
            await self.store.keep(self.account_id, response, [*self.items, *output_as_input(response)])
        except Exception:
            log.exception("storing response %s failed; answered with store: false", response.get("id"))
            response["store"] = False


@router.post("/v1/responses")
async def create_response(request: Request) -> Response:
    services = services_of(request)
    api_key = bearer_token(request)
    body = json_object(await read_body(request, services.settings.max_body_bytes))
    store = services.responses
    storing_on = store.enabled
    earlier = await _earlier_items(services, api_key, body)
    chat = chat_request_of(body, earlier, tags_header(request))
    request_id = request_id_of(request)
    opened = await services.calls.open(api_key, chat.shape, request_id)
    keeps = storing_on and wants_store(body)
    storing = _Storing(store if keeps else None, opened.account_id, [*earlier, *input_items(body)])
    skeleton = response_skeleton(body, f"resp_{request_id.hex}", int(time.time()), store=keeps)
    extra = {STORE_HEADER: "off"} if wants_store(body) and not storing_on else {}
    if chat.shape.stream:
        call = await services.calls.start_chat(opened, upstream_body(chat))
        return EventStreamResponse(
            _events(services.calls, call, chat, skeleton, storing), headers={**stream_headers(opened), **extra}
        )
    # Translated before the charge: an answer that cannot be translated is the provider's
    # garbled answer (a 502, nothing charged), never a 500 after the caller was charged.
    with CallerWatch(request.receive) as watch:  # a caller gone before the answer: a 499, nothing charged
        call = await services.calls.start_chat(opened, upstream_body(chat))
        (response, upstream_usage), receipt = await complete_answer(services.calls, call, _translated(skeleton), watch)
    response = response_with_usage(response, receipt_usage(receipt, upstream_usage))
    await storing.keep(response)
    headers = {**receipt_headers(receipt, opened), **extra}
    return Response(orjson.dumps(response), media_type="application/json", headers=headers)


async def _earlier_items(services: Services, api_key: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The stored conversation a ``previous_response_id`` continues (none without one); the
    key is authenticated first, so only its own account's responses are found."""
    previous = body.get("previous_response_id")
    if previous is None:
        return []
    if not isinstance(previous, str) or not previous:
        raise InvalidRequest("previous_response_id: must be a response id (string)", param="previous_response_id")
    key = await anyio.to_thread.run_sync(services.ledger.authenticate, api_key)
    return await services.responses.items_before(key.account_id, previous)  # a 400 with storage off


def chat_request_of(body: dict[str, Any], earlier: list[dict[str, Any]], tags: str | None) -> ChatRequest:
    """The chat request a Responses body (after ``earlier``, a stored conversation) runs as."""
    chat = parse_chat_request(orjson.dumps(chat_body_from_responses(body, earlier)), tags, endpoint="responses")
    # metadata is the request's attribution only (OpenAI's chat refuses it unless stored);
    # safety_identifier names the end user when user is not given.
    attribution = parse_attribution(attribution_user(body), body.get("metadata"), tags)
    return replace(chat, shape=replace(chat.shape, attribution=attribution))


def _translated(
    skeleton: dict[str, Any],
) -> Callable[[bytes, dict[str, Any]], tuple[dict[str, Any], dict[str, Any] | None]]:
    """The response of a completion, and the completion's own usage object (for the receipt;
    None when it sent none, or garbage: then the receipt's own figures are shown)."""

    def translate(_: bytes, completion: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        usage = completion.get("usage")
        return response_from_completion(completion, dict(skeleton)), usage if isinstance(usage, dict) else None

    return translate


async def _events(
    calls: BilledCalls,
    call: StartedCall[ChatExchange],
    chat: ChatRequest,
    skeleton: dict[str, Any],
    storing: _Storing,
) -> AsyncIterator[bytes]:
    """The chat relay's frames, as Responses stream events (billed by the relay's meter)."""
    translator = ResponsesStreamTranslator(skeleton)
    for name, data in translator.start():
        yield sse_event(name, data)
    # closed as soon as this stops reading it, so its upstream connection is released then
    async with aclosing(relay(calls, call, chat)) as pieces:
        async for piece in pieces:
            for frame in piece.split(b"\n\n"):  # a piece holds one or more whole frames
                payload = frame.removeprefix(b"data: ").strip()
                if not payload:
                    continue
                if payload == b"[DONE]":
                    for name, data in translator.finish():
                        yield sse_event(name, data)
                    assert translator.final is not None
                    await storing.keep(translator.final)
                    for name, data in translator.closing():
                        yield sse_event(name, data)
                    return
                chunk: dict[str, Any] = orjson.loads(payload)
                if "error" in chunk:  # the relay's error frame: the call is already billed as broken
                    error = chunk["error"]
                    message = error.get("message") if isinstance(error, dict) else None
                    for name, data in translator.failed(message if isinstance(message, str) else "the provider failed"):
                        yield sse_event(name, data)
                    return
                for name, data in translator.feed(chunk):
                    yield sse_event(name, data)
