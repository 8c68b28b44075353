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

import asyncio
from collections.abc import AsyncGenerator, Callable
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from adapters.http.calls import request_id_of
from adapters.http.chat_request import ChatRequest, parse_chat_request, tags_header
from adapters.http.disconnect import CallerWatch
from adapters.http.event_stream import EventStreamResponse, LastPiece
from adapters.http.rate_limit_headers import opened_rate_limit_headers
from adapters.http.receipts import ReceiptResponse, receipt_usage
from adapters.http.services import bearer_token, read_body, services_of
from adapters.http.text_chunks import TextChunkShape
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
        return EventStreamResponse(relay(services.calls, call, chat), headers=stream_headers(opened))
    with CallerWatch(request.receive) as watch:  # a caller gone before the answer: a 499, nothing charged
        call = await services.calls.start_chat(opened, upstream_body(chat))
        raw, _, receipt = await complete_plain(services.calls, call, watch)
    return ReceiptResponse(raw, receipt, opened)


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
    more whole SSE frames: what arrived together, and last (a ``LastPiece``,
    adapters/http/event_stream.py) every frame that ends the stream, so they leave in one write.

    A cancellation (the caller gone, a shutdown's cut) is the task's own ``task.cancel()``, no
    anyio scope: it lands at the relay's next wait, however fast the provider's data arrives."""
    upstream = call.result
    meter = StreamMeter(calls, call)
    frames = _ChatFrames(meter, chat.wants_usage)
    finished = False
    out: list[bytes] = []  # the payloads of the frames taken, not yet sent
    try:
        # One turn of the loop first: the caller's watch, started with the answer
        # (adapters/http/event_stream.py), looks before anything is relayed, so a caller
        # already gone is charged as gone (its prompt) however much of the answer is there.
        await asyncio.sleep(0)
        async for batch in upstream.stream_batches():
            for data in batch:
                if data == DONE:
                    finished = True
                    break
                frames.take(data, out)
            if out:
                yield frames_of(out)  # what arrived together leaves together: one write
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
        yield LastPiece(frames.closing_frame(receipt) + DONE_FRAME)
        return
    await meter.broken()
    # the chunks before a garbled one in the same batch (counted, so delivered), the held finish
    if frames.held_finish is not None:
        out.append(orjson.dumps(frames.held_finish))
    yield LastPiece(frames_of([*out, BROKEN_PAYLOAD]))


DONE_FRAME = b"data: [DONE]\n\n"


BROKEN_PAYLOAD = orjson.dumps(
    {
        "error": {
            "message": "the provider ended the stream early",
            "type": "upstream_error",
            "param": None,
            "code": STREAM_BROKEN,
        }
    }
)


def frames_of(payloads: list[bytes]) -> bytes:
    """The SSE frames of ``payloads`` (each ``data: P\\n\\n``), in one piece.

    The frames are joined around their payloads at once rather than each framed on its own
    (issue 21: two fewer byte strings made and copied per chunk relayed); the bytes are the same."""
    return b"data: " + b"\n\ndata: ".join(payloads) + b"\n\n"


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
        self.last_chunk: dict[str, Any] = {}  # its id, created and model: the closing frame's
        self.text_shape: TextChunkShape | None = None
        self.shape_tries = 3  # chunks a shape is learned from at most (each costs a parse)

    def take(self, data: bytes, out: list[bytes]) -> None:
        """Feed one chunk's payload to the meter; append the payloads of the frames the caller
        gets of it to ``out`` (``frames_of`` makes them frames)."""
        shape = self.text_shape
        produced = shape.chars(data) if shape is not None else None
        if produced is None:
            self._take_parsed(data, out)
            return
        # The learned text chunk with other text (adapters/http/text_chunks.py): valid, the same
        # id, model and choice (last_chunk stands), nothing finished, no usage, no error.
        self.meter.output_chars += produced
        if self.held_finish is not None:
            out.append(orjson.dumps(self.held_finish))
            self.held_finish = None
        out.append(data)

    def _take_parsed(self, data: bytes, out: list[bytes]) -> None:
        try:  # upstream_json, inlined: this runs once per chunk
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise MalformedUpstreamAnswer(NOT_JSON) from None
        meter = self.meter
        if meter.ttfb_ms is None:
            meter.first_byte()
        if not isinstance(chunk, dict):
            return
        if chunk.get("error"):
            # The provider reports a failure inside its stream (OpenRouter does, mid-stream; the
            # SDKs raise on it): it broke the stream, so only the output delivered is charged.
            raise MalformedUpstreamAnswer("the provider reported an error inside its stream")
        # The chunk's shape is checked before anything of it is counted: a garbled chunk is
        # MalformedUpstreamAnswer (the provider broke the stream), never a TypeError of ours.
        choices = chunk.get("choices")
        produced, finishing, text = _delta_produced(choices) if choices else (0, False, None)
        usage = chunk.get("usage")
        if usage:
            meter.usage = usage_from_openai_family(usage, chunk.get("service_tier"))
            self.upstream_usage = usage
        elif text is not None and produced and self.shape_tries and (self.last_chunk or "role" not in text):
            # A text chunk the shape did not read: learned from this one instead. Not from the
            # stream's first chunk when it also has the role (most providers send it there only:
            # its shape would read no other chunk, a learning wasted each stream); a provider
            # sending the role in every chunk has its shape learned from the second.
            self.shape_tries -= 1
            self.text_shape = TextChunkShape.learned(data, chunk, text) or self.text_shape
        if not choices:
            return  # the usage chunk: replaced by our own closing frame
        self.last_chunk = chunk
        meter.output_chars += produced
        if self.held_finish is not None:
            out.append(orjson.dumps(self.held_finish))
            self.held_finish = None
        if finishing and not self.wants_usage:
            self.held_finish = chunk  # sent last, carrying the usage and the charge
        else:
            out.append(data)

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


# A delta of text only (most chunks of most streams): its characters are its content's.
TEXT_DELTA = frozenset(("content", "role", "refusal"))


def _delta_produced(choices: Any) -> tuple[int, bool, dict[str, Any] | None]:
    """Characters a chunk's choices produced (see ``_choices_chars``), whether one finished,
    and the delta when the chunk is text only (one choice, unfinished, its delta's content a
    string, nothing else counted: ``TEXT_DELTA``).

    A single choice whose delta holds text only is read directly (``type(...) is``: exactly
    what orjson makes); any other shape goes through ``_choices_chars``'s checks, and both
    count the same."""
    if type(choices) is list and len(choices) == 1:
        choice = choices[0]
        if type(choice) is dict:
            delta = choice.get("delta")
            if type(delta) is dict and delta.keys() <= TEXT_DELTA:
                content = delta.get("content")
                if type(content) is not str:
                    return 0, bool(choice.get("finish_reason")), None
                if choice.get("finish_reason"):
                    return len(content), True, None
                return len(content), False, delta
    produced = _choices_chars(choices, "delta", "a delta", "a chunk")
    return produced, any(choice.get("finish_reason") for choice in choices), None


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
