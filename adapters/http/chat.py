"""``POST /v1/chat/completions``: parse → the billed call (application/calls.py: open,
call upstream with failover, confirm the hold) → read or relay → settle → answer.

Every path out of a handler closes the opened request exactly once: completed (and
charged for what was produced) or failed (hold released, nothing charged). What a
stream is charged however it ends (finished, caller gone, provider broke) is decided by
application/streams.py's ``StreamMeter``; this module only shapes the SSE frames (the
held finish chunk, the closing frame with the receipt, ``[DONE]``, the error event).

The provider's data is read with explicit shape checks: a chunk or an answer that is not
OpenAI's shape (choices not a list, a choice, delta or message not an object, tool calls not
a list...) is ``MalformedUpstreamAnswer``, the provider's failure (a broken stream: the output
delivered is charged; an unreadable answer: a 502, nothing charged), checked before anything
of it is counted. A TypeError or AttributeError here is a bug of ours (a 500, nothing charged).
"""

from collections.abc import AsyncGenerator, Callable
from typing import Any, TypeVar

import orjson
from anyio.lowlevel import checkpoint_if_cancelled
from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from adapters.http.calls import request_id_of
from adapters.http.chat_request import ChatRequest, parse_chat_request, tags_header
from adapters.http.disconnect import CallerWatch
from adapters.http.rate_limit_headers import opened_rate_limit_headers
from adapters.http.receipts import receipt_headers, receipt_usage
from adapters.http.services import bearer_token, read_body, services_of
from adapters.providers.base import DONE, READ_FAILURES, ChatExchange, MalformedUpstreamAnswer, upstream_json
from adapters.providers.openai_family import reasoning_text, usage_from_openai_family
from application.billing import OpenedRequest, Receipt
from application.calls import BilledCalls, StartedCall
from application.streams import STREAM_BROKEN, StreamMeter, charged_usage, elapsed_ms
from domain.errors import UpstreamError
from domain.usage import Usage

router = APIRouter()
NOT_JSON = "the provider sent something that is not JSON"  # as upstream_json says it
T = TypeVar("T")


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    services = services_of(request)
    api_key = bearer_token(request)
    chat = parse_chat_request(await read_body(request, services.settings.max_body_bytes), tags_header(request))
    opened = await services.calls.open(api_key, chat.shape, request_id_of(request))
    if chat.shape.stream:
        call = await services.calls.start_chat(opened, upstream_body(chat))
        return StreamingResponse(
            relay(services.calls, call, chat), media_type="text/event-stream", headers=stream_headers(opened)
        )
    with CallerWatch(request.receive) as watch:  # a caller gone before the answer: a 499, nothing charged
        call = await services.calls.start_chat(opened, upstream_body(chat))
        raw, _, receipt = await complete_plain(services.calls, call, watch)
    return Response(raw, media_type="application/json", headers=receipt_headers(receipt, opened))


def stream_headers(opened: OpenedRequest) -> dict[str, str]:
    headers = {"x-tallyhub-price-book-version": str(opened.price_book_version), "cache-control": "no-cache"}
    if opened.rate_limit is not None:
        headers.update(opened_rate_limit_headers(opened))
    return headers


def upstream_body(chat: ChatRequest) -> dict[str, Any]:
    if not chat.shape.stream:
        return chat.body
    # Always ask for usage so the stream can be billed from the provider's own count.
    options = dict(chat.body.get("stream_options") or {})
    options["include_usage"] = True
    return {**chat.body, "stream_options": options}


async def complete_plain(
    calls: BilledCalls, call: StartedCall[ChatExchange], watch: CallerWatch | None = None
) -> tuple[bytes, dict[str, Any], Receipt]:
    """Read a whole answer and charge for it: the raw bytes, the parsed document, the receipt."""
    (raw, parsed), receipt = await complete_answer(calls, call, _as_sent, watch)
    return raw, parsed, receipt


async def complete_answer(
    calls: BilledCalls,
    call: StartedCall[ChatExchange],
    answer: Callable[[bytes, dict[str, Any]], T],
    watch: CallerWatch | None = None,
) -> tuple[T, Receipt]:
    """Read a whole answer, make the caller's answer of it (``answer``: from the raw bytes and
    the parsed document), then charge for it: the caller's answer and the receipt.

    Everything that reads the provider's document happens before the charge, so an answer the
    provider garbled (not JSON, not an object, a choice or message of the wrong shape, or one
    ``answer`` cannot make sense of: it raises ``MalformedUpstreamAnswer``) fails the call as a
    502 ``upstream_bad_response`` with nothing charged: the caller is never charged for an answer
    it is not given; an answer still arriving when the provider's total timeout runs out is a
    504 ``upstream_timeout``, nothing charged. Anything else ``answer`` raises is a bug of ours:
    a 500, released. ``watch`` (adapters/http/disconnect.py) stops once the answer is read:
    the caller leaving before that cancels the call (a 499, released), after it does not."""
    opened, upstream = call.opened, call.result
    try:
        raw = await upstream.read_completion()
        if watch is not None:
            watch.answered()
        ttfb_ms = elapsed_ms(opened)
        parsed = upstream_json(raw)
        if not isinstance(parsed, dict):
            raise MalformedUpstreamAnswer("the provider's answer is not a JSON object")
        usage = charged_usage(opened, _usage_of(parsed), _content_chars(parsed))
        answered = answer(raw, parsed)
    except TimeoutError:
        error = UpstreamError("the provider timed out", status=504, code="upstream_timeout")
        await calls.fail_for(call, error)
        raise error from None
    except READ_FAILURES:
        error = UpstreamError("the provider sent an unreadable response", status=502, code="upstream_bad_response")
        await calls.fail_for(call, error)
        raise error from None
    except Exception as bug:
        await calls.fail_for(call, bug)  # a bug of ours: released, recorded as it is answered (a 500)
        raise
    except BaseException:
        upstream.abort()  # cancelled while reading (the caller gone, a shutdown's cut): released, nothing charged
        await calls.cancelled(call)
        raise
    finally:
        upstream.release()
    return answered, await calls.complete(call, usage, ttfb_ms)


def _as_sent(raw: bytes, parsed: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    return raw, parsed


async def relay(calls: BilledCalls, call: StartedCall[ChatExchange], chat: ChatRequest) -> AsyncGenerator[bytes]:
    """Forward upstream chunks as they come, as SSE frames; the call is billed once when the
    stream ends, however it ends (application/streams.py). Each yielded piece holds one or
    more whole SSE frames."""
    upstream = call.result
    meter = StreamMeter(calls, call)
    frames = _ChatFrames(meter, chat.wants_usage)
    finished = False
    out: list[bytes] = []  # frames taken, not yet sent
    try:
        async for batch in upstream.stream_batches():
            # A cancellation (the caller gone, a shutdown's cut) must land even while the
            # provider's data keeps arriving: under uvloop anyio would never find this task
            # waiting on an unresolved read, and the relay would run on into the void.
            await checkpoint_if_cancelled()
            for data in batch:
                if data == DONE:
                    finished = True
                    break
                out += frames.take(data)
            if out:
                yield b"".join(out)  # what arrived together leaves together: one write
                out = []
            if finished:
                break
    except READ_FAILURES:
        pass  # the provider broke the stream (or garbled a chunk): billed below for what was delivered
    except Exception:
        await meter.crashed()  # a bug of ours: nothing charged, the provider not blamed
        raise
    except BaseException:
        await meter.client_gone()  # cancelled: the upstream call is stopped, what was produced billed
        raise
    finally:
        upstream.release()
    if finished:
        receipt = await meter.finished()
        yield frames.closing_frame(receipt)
        yield b"data: [DONE]\n\n"
        return
    await meter.broken()
    if out:  # the chunks before a garbled one in the same batch: counted, so delivered
        yield b"".join(out)
    if frames.held_finish is not None:
        yield _frame(frames.held_finish)
    yield BROKEN_FRAME


BROKEN_FRAME = (
    b"data: "
    + orjson.dumps(
        {
            "error": {
                "message": "the provider ended the stream early",
                "type": "upstream_error",
                "param": None,
                "code": STREAM_BROKEN,
            }
        }
    )
    + b"\n\n"
)


class _ChatFrames:
    """A relayed chat stream's SSE frames: each chunk passed on as it came, but for the
    usage chunk (replaced by the closing frame carrying the receipt) and, when the caller
    did not ask for usage, the finish chunk (held, and sent last carrying it). What each
    chunk produced is fed to the stream's meter."""

    def __init__(self, meter: StreamMeter, wants_usage: bool) -> None:
        self.meter = meter
        self.wants_usage = wants_usage
        self.upstream_usage: dict[str, Any] | None = None
        self.held_finish: dict[str, Any] | None = None
        self.last_chunk: dict[str, Any] = {}

    def take(self, data: bytes) -> list[bytes]:
        try:  # upstream_json, inlined: this runs once per chunk
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise MalformedUpstreamAnswer(NOT_JSON) from None
        meter = self.meter
        if meter.ttfb_ms is None:
            meter.first_byte()
        if not isinstance(chunk, dict):
            return []
        if chunk.get("error"):
            # The provider reports a failure inside its stream (OpenRouter does, mid-stream; the
            # SDKs raise on it): it broke the stream, so only the output delivered is charged.
            raise MalformedUpstreamAnswer("the provider reported an error inside its stream")
        # The chunk's shape is checked before anything of it is counted: a garbled chunk is
        # MalformedUpstreamAnswer (the provider broke the stream), never a TypeError of ours.
        choices = chunk.get("choices")
        produced = _delta_chars(choices) if choices else 0
        usage = chunk.get("usage")
        if usage:
            meter.usage = usage_from_openai_family(usage, chunk.get("service_tier"))
            self.upstream_usage = usage
        if not choices:
            return []  # the usage chunk: replaced by our own closing frame
        self.last_chunk = chunk
        meter.output_chars += produced
        frames = []
        if self.held_finish is not None:
            frames.append(_frame(self.held_finish))
            self.held_finish = None
        if not self.wants_usage and any(choice.get("finish_reason") for choice in choices):
            self.held_finish = chunk  # sent last, carrying the usage and the charge
        else:
            frames.append(b"data: " + data + b"\n\n")
        return frames

    def closing_frame(self, receipt: Receipt) -> bytes:
        usage = receipt_usage(receipt, self.upstream_usage)
        closing: dict[str, Any]
        if self.wants_usage or self.held_finish is None:
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


def _delta_chars(choices: Any) -> int:
    """Characters a chunk's choices produced (see ``_choices_chars``)."""
    return _choices_chars(choices, "delta", "a delta", "a chunk")


def _content_chars(response: dict[str, Any]) -> int:
    """Characters a whole answer's choices produced (see ``_choices_chars``)."""
    choices = response.get("choices")
    return _choices_chars(choices, "message", "a message", "an answer") if choices else 0


def _choices_chars(choices: Any, part: str, part_named: str, sent: str) -> int:
    """Characters the choices' ``part`` (a chunk's delta, an answer's message) produced;
    ``MalformedUpstreamAnswer`` for a shape that is not OpenAI's (choices not a list, a choice
    or its part not an object, see ``_produced_chars``)."""
    if not isinstance(choices, list):
        raise MalformedUpstreamAnswer(f"the provider sent {sent} whose choices are not a list")
    total = 0
    for choice in choices:
        if not isinstance(choice, dict):
            raise MalformedUpstreamAnswer("the provider sent a choice that is not a JSON object")
        value = choice.get(part)
        if value:
            total += _produced_chars(_part(value, part_named))
    return total


def _part(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedUpstreamAnswer(f"the provider sent {what} that is not a JSON object")
    return value


def _produced_chars(part: dict[str, Any]) -> int:
    """Characters a delta or message produced: text, reasoning and tool-call arguments.

    Content that is not a string (a provider's list of parts) counts 0, as arguments sent as a
    JSON object or array count their length: shapes providers send, counted as before. Tool
    calls that are not a list, a call or function that is not an object, or arguments that are
    a number are ``MalformedUpstreamAnswer``."""
    content = part.get("content")
    total = len(content) if isinstance(content, str) else 0
    total += len(reasoning_text(part))
    calls = part.get("tool_calls")
    if not calls:
        return total
    if not isinstance(calls, list):
        raise MalformedUpstreamAnswer("the provider sent tool_calls that are not a list")
    for call in calls:
        function = _part(call, "a tool call").get("function") if call else None
        arguments = _part(function, "a tool call's function").get("arguments") if function else None
        if arguments:
            if not isinstance(arguments, (str, dict, list)):
                raise MalformedUpstreamAnswer("the provider sent tool-call arguments that are a number")
            total += len(arguments)
    return total


def _usage_of(response: dict[str, Any]) -> Usage | None:
    usage = response.get("usage")
    return usage_from_openai_family(usage, response.get("service_tier")) if isinstance(usage, dict) else None
