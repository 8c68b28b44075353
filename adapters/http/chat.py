"""``POST /v1/chat/completions``: parse → the billed call (application/calls.py: open,
call upstream with failover, confirm the hold) → relay or read → settle → answer.

Every path out of a handler closes the opened request exactly once: completed (and
charged for what was produced) or failed (hold released, nothing charged). A client
that disconnects mid-stream cancels the upstream call and is charged, in a shielded
scope, for what was produced up to then.
"""

import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from adapters.http.calls import request_id_of
from adapters.http.chat_request import ChatRequest, parse_chat_request
from adapters.http.receipts import receipt_headers, receipt_usage
from adapters.http.services import bearer_token, read_body, services_of
from adapters.providers.base import DONE, READ_FAILURES, ChatExchange
from adapters.providers.openai_family import reasoning_text, usage_from_openai_family
from adapters.services import Services
from application.billing import OpenedRequest, Receipt
from application.calls import StartedCall
from domain.errors import UpstreamError
from domain.estimation import estimated_usage
from domain.usage import Usage

router = APIRouter()


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    services = services_of(request)
    api_key = bearer_token(request)
    chat = parse_chat_request(await read_body(request, services.settings.max_body_bytes))
    opened = await services.calls.open(api_key, chat.shape, request_id_of(request))
    call = await services.calls.start_chat(opened, upstream_body(chat))
    if chat.shape.stream:
        return StreamingResponse(
            relay(services, call, chat), media_type="text/event-stream", headers=stream_headers(opened)
        )
    raw, _, receipt = await complete_plain(services, call)
    return Response(raw, media_type="application/json", headers=receipt_headers(receipt))


def stream_headers(opened: OpenedRequest) -> dict[str, str]:
    return {"x-tallyhub-price-book-version": str(opened.price_book_version), "cache-control": "no-cache"}


def upstream_body(chat: ChatRequest) -> dict[str, Any]:
    if not chat.shape.stream:
        return chat.body
    # Always ask for usage so the stream can be billed from the provider's own count.
    options = dict(chat.body.get("stream_options") or {})
    options["include_usage"] = True
    return {**chat.body, "stream_options": options}


async def complete_plain(services: Services, call: StartedCall[ChatExchange]) -> tuple[bytes, dict[str, Any], Receipt]:
    """Read a whole answer and charge for it: the raw bytes, the parsed document, the receipt."""
    opened, upstream = call.opened, call.result
    try:
        raw = await upstream.read_completion()
        ttfb_ms = _ms_since(opened)
        parsed = orjson.loads(raw)
        if not isinstance(parsed, dict):
            raise ValueError("not an object")
    except READ_FAILURES:
        await services.calls.fail(call, 502, "upstream_bad_response")
        raise UpstreamError(
            "the provider sent an unreadable response", status=502, code="upstream_bad_response"
        ) from None
    finally:
        upstream.release()
    usage = _usage_of(parsed) or estimated_usage(
        input_chars=opened.shape.prompt_bytes, output_chars=_content_chars(parsed)
    )
    receipt = await services.calls.complete(call, usage, ttfb_ms)
    return raw, parsed, receipt


async def relay(services: Services, call: StartedCall[ChatExchange], chat: ChatRequest) -> AsyncIterator[bytes]:
    """Forward upstream chunks as they come; bill once when the stream ends, however it ends.
    Each yielded piece holds one or more whole SSE frames."""
    opened, upstream = call.opened, call.result
    state = _StreamState()
    try:
        async for batch in upstream.stream_batches():
            frames = []
            for data in batch:
                if data == DONE:
                    state.finished = True
                    break
                frames += state.take(data, chat.wants_usage, opened)
            if frames:
                yield b"".join(frames)  # what arrived together leaves together: one write
            if state.finished:
                break
    except READ_FAILURES:
        pass  # the provider broke the stream: billed below for what was produced, then an error event
    except BaseException:
        # The client went away (cancelled): stop the upstream call, bill what was produced.
        upstream.abort()
        with anyio.CancelScope(shield=True):
            await services.calls.complete(call, state.usage_or_estimate(opened), state.ttfb_ms, status=499)
        raise
    finally:
        upstream.release()
    if state.finished:
        receipt = await services.calls.complete(call, state.usage_or_estimate(opened), state.ttfb_ms)
        yield state.closing_frame(receipt, chat.wants_usage)
        yield b"data: [DONE]\n\n"
        return
    if state.output_chars == 0 and state.usage is None:
        await services.calls.fail(call, 502, "upstream_stream_broken")
    else:
        await services.calls.complete(
            call, state.usage_for_break(), state.ttfb_ms, status=502, error_code="upstream_stream_broken"
        )
    if state.held_finish is not None:
        yield _frame(state.held_finish)
    yield (
        b"data: "
        + orjson.dumps(
            {
                "error": {
                    "message": "the provider ended the stream early",
                    "type": "upstream_error",
                    "param": None,
                    "code": "upstream_stream_broken",
                }
            }
        )
        + b"\n\n"
    )


class _StreamState:
    """What a relayed stream has produced so far."""

    def __init__(self) -> None:
        self.finished = False
        self.usage: Usage | None = None
        self.upstream_usage: dict[str, Any] | None = None
        self.output_chars = 0
        self.ttfb_ms: float | None = None
        self.held_finish: dict[str, Any] | None = None
        self.last_chunk: dict[str, Any] = {}

    def take(self, data: bytes, wants_usage: bool, opened: OpenedRequest) -> list[bytes]:
        chunk = orjson.loads(data)
        if self.ttfb_ms is None:
            self.ttfb_ms = _ms_since(opened)
        if not isinstance(chunk, dict):
            return []
        if chunk.get("usage"):
            self.upstream_usage = chunk["usage"]
            self.usage = usage_from_openai_family(chunk["usage"])
        choices = chunk.get("choices") or []
        if not choices:
            return []  # the usage chunk: replaced by our own closing frame
        self.last_chunk = chunk
        self.output_chars += _delta_chars(choices)
        frames = []
        if self.held_finish is not None:
            frames.append(_frame(self.held_finish))
            self.held_finish = None
        if not wants_usage and any(choice.get("finish_reason") for choice in choices):
            self.held_finish = chunk  # sent last, carrying the usage and the charge
        else:
            frames.append(b"data: " + data + b"\n\n")
        return frames

    def usage_or_estimate(self, opened: OpenedRequest) -> Usage:
        """The provider's count, else the prompt and the output relayed so far, estimated."""
        return self.usage or estimated_usage(input_chars=opened.shape.prompt_bytes, output_chars=self.output_chars)

    def usage_for_break(self) -> Usage:
        """The provider failed mid-way: only the output actually delivered is charged."""
        return estimated_usage(input_chars=0, output_chars=self.output_chars)

    def closing_frame(self, receipt: Receipt, wants_usage: bool) -> bytes:
        usage = receipt_usage(receipt, self.upstream_usage)
        if wants_usage or self.held_finish is None:
            base = self.last_chunk
            closing = {
                "id": base.get("id"),
                "object": "chat.completion.chunk",
                "created": base.get("created"),
                "model": base.get("model"),
                "choices": [],
                "usage": usage,
            }
        else:
            closing = {**self.held_finish, "usage": usage}
            self.held_finish = None
        return _frame(closing)


def _frame(chunk: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _delta_chars(choices: list[Any]) -> int:
    return sum(_produced_chars(choice.get("delta") or {}) for choice in choices)


def _content_chars(response: dict[str, Any]) -> int:
    return sum(_produced_chars(choice.get("message") or {}) for choice in response.get("choices") or ())


def _produced_chars(part: dict[str, Any]) -> int:
    """Characters a delta or message produced: text, reasoning and tool-call arguments."""
    content = part.get("content")
    total = len(content) if isinstance(content, str) else 0
    total += len(reasoning_text(part))
    for call in part.get("tool_calls") or ():
        total += len(((call or {}).get("function") or {}).get("arguments") or "")
    return total


def _usage_of(response: dict[str, Any]) -> Usage | None:
    usage = response.get("usage")
    return usage_from_openai_family(usage) if isinstance(usage, dict) else None


def _ms_since(opened: OpenedRequest) -> float:
    return round((time.monotonic() - opened.started) * 1000, 3)
