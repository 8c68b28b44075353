"""A stream's billing (application/streams.py StreamMeter) through the chat relay
(adapters/http/chat.py ``relay``) with a fake provider stream, no server: for each way a
stream ends — finished, the caller gone mid-stream, the provider broken after some output
or before any, a chunk the provider garbled (the same broken stream), a bug of ours — what is
charged and recorded, and that the call is closed (its hold settled or released) exactly once.
Also a whole answer (``complete_plain``, ``complete_answer``) the provider garbled, and the
Anthropic ingress's stream (adapters/http/messages.py) over the same relay."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import aiohttp
import orjson
import pytest

from adapters.http.chat import complete_answer, complete_plain, relay, upstream_body
from adapters.http.chat_request import ChatRequest, parse_chat_request
from adapters.http.messages import _events as messages_events
from adapters.http.messages_translate import message_from_completion
from application.accounts import Accounts
from application.billing import Receipt
from application.calls import BilledCalls, StartedCall
from application.ports import ChatExchange
from application.streams import StreamAlreadyEnded, StreamMeter
from domain.errors import UpstreamError
from domain.estimation import estimated_usage
from domain.usage import Usage
from tests.fakes.provider import FakeExchange, FakeProvider, StreamScript
from tests.unit.test_billed_call import CountingBilling, World, world  # noqa: F401  (the fixture)

GRANT = 10**15
TEXT = ("Hel", "lo, ", "world")


def chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> bytes:
    delta = {} if content is None else {"content": content}
    choices = [{"index": 0, "delta": delta, "finish_reason": finish}]
    return orjson.dumps(
        {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-test", "choices": choices}
        | extra
    )


USAGE_CHUNK = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-test",
        "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
    }
)
PROVIDER_USAGE = Usage(input_tokens=12, output_tokens=7)
OUTPUT = (tuple(chunk(text) for text in TEXT),)  # one batch: three content chunks


def chat_request(*, include_usage: bool = False) -> ChatRequest:
    body: dict[str, Any] = {
        "model": "smart",
        "messages": [{"role": "user", "content": "hello"}],
        "stream": True,
        "max_tokens": 100,
    }
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    return parse_chat_request(orjson.dumps(body))


async def start(calls: BilledCalls, key: str, chat: ChatRequest) -> StartedCall[ChatExchange]:
    opened = await calls.open(key, chat.shape, uuid4())
    return await calls.start_chat(opened, upstream_body(chat))


async def collect(pieces: AsyncIterator[bytes]) -> list[dict[str, Any] | str]:
    frames: list[dict[str, Any] | str] = []
    async for piece in pieces:
        for frame in piece.split(b"\n\n"):
            payload = frame.removeprefix(b"data: ")
            if payload:
                frames.append("[DONE]" if payload == b"[DONE]" else orjson.loads(payload))
    return frames


def billing_of(calls: BilledCalls) -> CountingBilling:
    assert isinstance(calls.billing, CountingBilling)
    return calls.billing


def setup(world: World, script: StreamScript) -> tuple[BilledCalls, FakeProvider]:
    Accounts(world.ledger).grant_credits("acme", GRANT)
    provider = FakeProvider(stream=script)
    return world.calls(provider), provider


def test_a_finished_stream_is_charged_the_providers_usage_once_and_its_closing_frame_carries_the_receipt(
    world: World,
) -> None:
    calls, provider = setup(world, StreamScript(batches=(*OUTPUT, (chunk(finish="stop"), USAGE_CHUNK))))
    chat = chat_request()

    async def scenario() -> tuple[StartedCall[ChatExchange], list[dict[str, Any] | str]]:
        call = await start(calls, world.key, chat)
        return call, await collect(relay(calls, call, chat))

    call, frames = asyncio.run(scenario())
    request_id = call.opened.request_id
    assert billing_of(calls).completed == [(request_id, 200, None, PROVIDER_USAGE)]
    assert billing_of(calls).failed == []
    charge = world.record(request_id).details.charge
    assert charge > 0 and world.account() == (GRANT - charge, 0)  # settled: nothing held
    closing = frames[-2]
    assert frames[-1] == "[DONE]" and isinstance(closing, dict)
    # the held finish chunk is sent last, carrying the provider's usage and the exact charge
    assert closing["choices"][0]["finish_reason"] == "stop"
    assert closing["usage"]["completion_tokens"] == 7 and closing["usage"]["cost_nanocredits"] == charge
    exchange = provider.exchanges[0]
    assert exchange.released and not exchange.aborted


def test_a_finished_stream_without_usage_is_charged_the_estimate_from_prompt_bytes_and_output(world: World) -> None:
    calls, _ = setup(world, StreamScript(batches=OUTPUT))
    chat = chat_request(include_usage=True)

    async def scenario() -> tuple[StartedCall[ChatExchange], list[dict[str, Any] | str]]:
        call = await start(calls, world.key, chat)
        return call, await collect(relay(calls, call, chat))

    call, frames = asyncio.run(scenario())
    estimate = estimated_usage(input_chars=chat.shape.prompt_bytes, output_chars=len("".join(TEXT)))
    assert billing_of(calls).completed == [(call.opened.request_id, 200, None, estimate)]
    closing = frames[-2]
    assert isinstance(closing, dict) and closing["choices"] == []  # asked for usage: a usage-only closing chunk
    assert closing["usage"]["usage_source"] == "estimated"
    assert world.account()[1] == 0


@pytest.mark.parametrize("how", ["cancelled while waiting for the provider", "closed at a frame"])
def test_a_caller_gone_mid_stream_is_a_499_charged_for_what_was_relayed_once_and_the_upstream_aborted(
    world: World, how: str
) -> None:
    script = StreamScript(batches=OUTPUT, hang=True)
    calls, provider = setup(world, script)
    chat = chat_request()

    async def scenario() -> StartedCall[ChatExchange]:
        call = await start(calls, world.key, chat)
        pieces = relay(calls, call, chat)
        first = await pieces.__anext__()
        assert first.count(b"data: ") == 3
        if how == "closed at a frame":
            await pieces.aclose()  # what the server does to a response whose client left
            return call
        waiting = asyncio.ensure_future(pieces.__anext__())
        await script.started.wait()  # the relay is waiting for the next batch
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        return call

    call = asyncio.run(scenario())
    request_id = call.opened.request_id
    estimate = estimated_usage(input_chars=chat.shape.prompt_bytes, output_chars=len("".join(TEXT)))
    assert billing_of(calls).completed == [(request_id, 499, None, estimate)]
    assert billing_of(calls).failed == []
    assert world.record(request_id).details.status == 499
    charge = world.record(request_id).details.charge
    assert charge > 0 and world.account() == (GRANT - charge, 0)
    exchange = provider.exchanges[0]
    assert exchange.aborted and exchange.released


def test_a_stream_the_provider_broke_after_some_output_is_charged_only_the_output_delivered(world: World) -> None:
    calls, provider = setup(world, StreamScript(batches=OUTPUT, ending=aiohttp.ClientPayloadError("cut")))
    chat = chat_request()

    async def scenario() -> tuple[StartedCall[ChatExchange], list[dict[str, Any] | str]]:
        call = await start(calls, world.key, chat)
        return call, await collect(relay(calls, call, chat))

    call, frames = asyncio.run(scenario())
    request_id = call.opened.request_id
    delivered = estimated_usage(input_chars=0, output_chars=len("".join(TEXT)))
    assert billing_of(calls).completed == [(request_id, 502, "upstream_stream_broken", delivered)]
    assert billing_of(calls).failed == []
    charge = world.record(request_id).details.charge
    assert charge > 0 and world.account() == (GRANT - charge, 0)
    assert frames[-1] == {
        "error": {
            "message": "the provider ended the stream early",
            "type": "upstream_error",
            "param": None,
            "code": "upstream_stream_broken",
        }
    }
    assert "[DONE]" not in frames
    assert provider.exchanges[0].released and not provider.exchanges[0].aborted


def test_a_stream_the_provider_broke_before_any_output_fails_uncharged_with_the_hold_released_once(
    world: World,
) -> None:
    calls, _ = setup(world, StreamScript(ending=TimeoutError()))
    chat = chat_request()

    async def scenario() -> tuple[StartedCall[ChatExchange], list[dict[str, Any] | str]]:
        call = await start(calls, world.key, chat)
        return call, await collect(relay(calls, call, chat))

    call, frames = asyncio.run(scenario())
    request_id = call.opened.request_id
    assert billing_of(calls).failed == [(request_id, 502, "upstream_stream_broken")]
    assert billing_of(calls).completed == []
    details = world.record(request_id).details
    assert (details.status, details.error_code, details.charge) == (502, "upstream_stream_broken", 0)
    assert world.account() == (GRANT, 0)
    assert len(frames) == 1 and isinstance(frames[0], dict) and "error" in frames[0]


def test_a_held_finish_chunk_is_still_sent_before_the_error_when_the_provider_breaks(world: World) -> None:
    script = StreamScript(batches=((chunk("hi"), chunk(finish="stop")),), ending=aiohttp.ServerDisconnectedError())
    calls, _ = setup(world, script)
    chat = chat_request()

    async def scenario() -> list[dict[str, Any] | str]:
        call = await start(calls, world.key, chat)
        return await collect(relay(calls, call, chat))

    frames = asyncio.run(scenario())
    finish, error = frames[-2:]
    assert isinstance(finish, dict) and finish["choices"][0]["finish_reason"] == "stop" and "usage" not in finish
    assert isinstance(error, dict) and error["error"]["code"] == "upstream_stream_broken"


def test_a_bug_of_ours_mid_stream_releases_the_hold_as_a_500_aborts_the_upstream_and_propagates(world: World) -> None:
    calls, provider = setup(world, StreamScript(batches=OUTPUT, ending=KeyError("choices")))
    chat = chat_request()

    async def scenario() -> StartedCall[ChatExchange]:
        call = await start(calls, world.key, chat)
        with pytest.raises(KeyError):
            await collect(relay(calls, call, chat))
        return call

    call = asyncio.run(scenario())
    request_id = call.opened.request_id
    assert billing_of(calls).failed == [(request_id, 500, "internal_error")]
    assert billing_of(calls).completed == []
    assert world.account() == (GRANT, 0)  # nothing charged: the output relayed is not billed
    exchange = provider.exchanges[0]
    assert exchange.aborted and exchange.released


def test_a_whole_answer_is_charged_the_providers_usage_and_a_bug_of_ours_reading_it_is_a_500_released(
    world: World,
) -> None:
    Accounts(world.ledger).grant_credits("acme", GRANT)
    chat = parse_chat_request(orjson.dumps({"model": "smart", "messages": [{"role": "user", "content": "hi"}]}))
    served = world.calls(FakeProvider())
    broken = world.calls(FakeProvider(completion=TypeError("a bug")))

    async def scenario() -> tuple[Receipt, StartedCall[ChatExchange]]:
        _, _, receipt = await complete_plain(served, await start(served, world.key, chat))
        call = await start(broken, world.key, chat)
        with pytest.raises(TypeError):
            await complete_plain(broken, call)
        return receipt, call

    receipt, call = asyncio.run(scenario())
    assert receipt.usage == Usage(input_tokens=10, output_tokens=5)  # tests/fakes/provider.py COMPLETION
    assert billing_of(served).completed == [(receipt.request_id, 200, None, receipt.usage)]
    assert billing_of(broken).failed == [(call.opened.request_id, 500, "internal_error")]
    assert billing_of(broken).completed == []
    assert world.account() == (GRANT - receipt.charge, 0)


def test_a_meter_ends_its_call_once_a_second_ending_is_refused_and_a_caller_gone_after_it_is_ignored(
    world: World,
) -> None:
    Accounts(world.ledger).grant_credits("acme", GRANT)
    provider = FakeProvider()
    calls = world.calls(provider)
    chat = chat_request()

    async def scenario() -> tuple[StreamMeter, Receipt]:
        meter = StreamMeter(calls, await start(calls, world.key, chat))
        meter.first_byte()
        meter.output_chars += 40
        receipt = await meter.finished()
        with pytest.raises(StreamAlreadyEnded):
            await meter.finished()
        with pytest.raises(StreamAlreadyEnded):
            await meter.broken()
        await meter.client_gone()
        return meter, receipt

    meter, receipt = asyncio.run(scenario())
    assert [status for _, status, _, _ in billing_of(calls).completed] == [200]
    assert billing_of(calls).failed == []
    assert meter.ttfb_ms is not None and receipt.usage == meter.usage_or_estimate()
    exchange: FakeExchange = provider.exchanges[0]
    assert not exchange.aborted  # the caller left after the call was closed: nothing to stop


# A chunk the provider garbled: JSON, but not OpenAI's shape. reading it must not raise a
# TypeError or AttributeError (a bug of ours: a 500 with nothing charged) but
# MalformedUpstreamAnswer: the provider broke the stream, and the output delivered is charged.
GARBLED_CHUNKS = {
    "choices-an-object": orjson.dumps({"id": "chatcmpl-1", "choices": {"index": 0}}),
    "choices-a-string": orjson.dumps({"id": "chatcmpl-1", "choices": "oops"}),
    "choices-a-number": orjson.dumps({"id": "chatcmpl-1", "choices": 3}),
    "a-choice-not-an-object": orjson.dumps({"id": "chatcmpl-1", "choices": ["oops"]}),
    "a-delta-not-an-object": orjson.dumps({"id": "chatcmpl-1", "choices": [{"index": 0, "delta": ["oops"]}]}),
    "tool-calls-a-number": orjson.dumps({"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"tool_calls": 5}}]}),
    "a-tool-call-a-string": orjson.dumps(
        {"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"tool_calls": ["x"]}}]}
    ),
    "arguments-a-number": orjson.dumps(
        {"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"tool_calls": [{"function": {"arguments": 5}}]}}]}
    ),
    "reasoning-details-a-number": orjson.dumps(
        {"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"reasoning_details": 5}}]}
    ),
    "usage-a-list": orjson.dumps({"id": "chatcmpl-1", "choices": [], "usage": [1, 2]}),
    # not garbled, but the same ending: the provider reports its failure inside the stream
    # (OpenRouter's mid-stream error), and the SDKs raise on it
    "an-error-inside-the-stream": orjson.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "error": {"code": 502, "message": "Provider disconnected"},
            "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
        }
    ),
}


def relayed_text(frames: list[dict[str, Any] | str]) -> str:
    return "".join(
        choice["delta"].get("content") or ""
        for frame in frames
        if isinstance(frame, dict)
        for choice in frame.get("choices", ())
    )


@pytest.mark.parametrize("garbled", GARBLED_CHUNKS.values(), ids=GARBLED_CHUNKS.keys())
def test_a_chunk_the_provider_garbled_after_some_output_is_a_broken_stream_charged_for_the_output_delivered(
    world: World, garbled: bytes
) -> None:
    calls, provider = setup(world, StreamScript(batches=(*OUTPUT, (garbled, chunk(" more")))))
    chat = chat_request()

    async def scenario() -> tuple[StartedCall[ChatExchange], list[dict[str, Any] | str]]:
        call = await start(calls, world.key, chat)
        return call, await collect(relay(calls, call, chat))

    call, frames = asyncio.run(scenario())
    request_id = call.opened.request_id
    delivered = estimated_usage(input_chars=0, output_chars=len("".join(TEXT)))
    assert billing_of(calls).completed == [(request_id, 502, "upstream_stream_broken", delivered)]
    assert billing_of(calls).failed == []
    details = world.record(request_id).details
    assert (details.status, details.error_code) == (502, "upstream_stream_broken")
    assert details.charge > 0 and world.account() == (GRANT - details.charge, 0)
    assert relayed_text(frames) == "".join(TEXT)  # nothing after the garbled chunk is relayed
    assert isinstance(frames[-1], dict) and frames[-1]["error"]["code"] == "upstream_stream_broken"
    assert "[DONE]" not in frames
    assert provider.exchanges[0].released


@pytest.mark.parametrize(
    "garbled", [b"<html>oops</html>", GARBLED_CHUNKS["a-choice-not-an-object"]], ids=["not-json", "not-openai-shape"]
)
def test_the_chunks_before_a_garbled_one_in_the_same_read_are_delivered_and_exactly_those_are_charged(
    world: World, garbled: bytes
) -> None:
    # the relay writes what arrived together at once: chunks already counted before the garbled
    # one must still reach the caller, or the caller pays for output it never got
    calls, _ = setup(world, StreamScript(batches=((*OUTPUT[0], garbled),)))
    chat = chat_request()

    async def scenario() -> tuple[StartedCall[ChatExchange], list[dict[str, Any] | str]]:
        call = await start(calls, world.key, chat)
        return call, await collect(relay(calls, call, chat))

    call, frames = asyncio.run(scenario())
    delivered = estimated_usage(input_chars=0, output_chars=len("".join(TEXT)))
    assert billing_of(calls).completed == [(call.opened.request_id, 502, "upstream_stream_broken", delivered)]
    assert relayed_text(frames) == "".join(TEXT)
    assert isinstance(frames[-1], dict) and frames[-1]["error"]["code"] == "upstream_stream_broken"


GARBLED_ANSWERS = {
    "choices-an-object": {"id": "x", "choices": {"index": 0}},
    "a-choice-not-an-object": {"id": "x", "choices": ["hello"]},
    "a-message-not-an-object": {"id": "x", "choices": [{"index": 0, "message": ["hello"]}]},
    "tool-calls-a-number": {"id": "x", "choices": [{"index": 0, "message": {"content": "hi", "tool_calls": 1}}]},
}


@pytest.mark.parametrize("document", GARBLED_ANSWERS.values(), ids=GARBLED_ANSWERS.keys())
def test_a_whole_answer_the_provider_garbled_fails_as_a_502_uncharged_and_released(
    world: World, document: dict[str, Any]
) -> None:
    Accounts(world.ledger).grant_credits("acme", GRANT)
    chat = parse_chat_request(orjson.dumps({"model": "smart", "messages": [{"role": "user", "content": "hi"}]}))
    provider = FakeProvider(completion=orjson.dumps(document))
    calls = world.calls(provider)

    async def scenario() -> StartedCall[ChatExchange]:
        call = await start(calls, world.key, chat)
        with pytest.raises(UpstreamError) as raised:
            await complete_plain(calls, call)
        assert (raised.value.status, raised.value.code) == (502, "upstream_bad_response")
        return call

    call = asyncio.run(scenario())
    assert billing_of(calls).failed == [(call.opened.request_id, 502, "upstream_bad_response")]
    assert billing_of(calls).completed == []
    assert world.account() == (GRANT, 0)
    assert provider.exchanges[0].released


def test_an_answer_its_translation_cannot_read_fails_as_a_502_before_anything_is_charged(world: World) -> None:
    # the Anthropic ingress translates the answer before the charge (adapters/http/messages.py)
    Accounts(world.ledger).grant_credits("acme", GRANT)
    chat = parse_chat_request(orjson.dumps({"model": "smart", "messages": [{"role": "user", "content": "hi"}]}))
    calls = world.calls(FakeProvider(completion=orjson.dumps({"id": "x", "choices": [], "usage": {}})))

    async def scenario() -> StartedCall[ChatExchange]:
        call = await start(calls, world.key, chat)
        with pytest.raises(UpstreamError):
            await complete_answer(calls, call, lambda _, completion: message_from_completion(completion, "m"))
        return call

    call = asyncio.run(scenario())
    assert billing_of(calls).failed == [(call.opened.request_id, 502, "upstream_bad_response")]
    assert billing_of(calls).completed == [] and world.account() == (GRANT, 0)


def anthropic_events(pieces: list[bytes]) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for frame in b"".join(pieces).split(b"\n\n"):
        if frame:
            name, data = frame.split(b"\n", 1)
            events.append((name.removeprefix(b"event: ").decode(), orjson.loads(data.removeprefix(b"data: "))))
    return events


def test_a_chunk_garbled_mid_stream_through_the_anthropic_ingress_is_an_error_event_charged_for_the_output(
    world: World,
) -> None:
    calls, _ = setup(world, StreamScript(batches=(*OUTPUT, (GARBLED_CHUNKS["a-delta-not-an-object"],))))
    chat = chat_request()

    async def scenario() -> tuple[StartedCall[ChatExchange], list[bytes]]:
        call = await start(calls, world.key, chat)
        return call, [piece async for piece in messages_events(calls, call, chat)]

    call, pieces = asyncio.run(scenario())
    events = anthropic_events(pieces)
    text = "".join(data["delta"]["text"] for name, data in events if name == "content_block_delta")
    assert text == "".join(TEXT)
    assert events[0][0] == "message_start" and events[-1][0] == "error"
    assert events[-1][1]["error"] == {"type": "api_error", "message": "the provider ended the stream early"}
    delivered = estimated_usage(input_chars=0, output_chars=len("".join(TEXT)))
    assert billing_of(calls).completed == [(call.opened.request_id, 502, "upstream_stream_broken", delivered)]
    assert billing_of(calls).failed == []


def test_an_error_the_provider_sends_in_its_stream_ends_the_anthropic_stream_billed_as_broken_and_released_at_once(
    world: World,
) -> None:
    # the provider still sends [DONE] after its error chunk: the relay must not bill that as a
    # finished 200, and the Anthropic ingress, which stops reading at the error, must close the
    # relay then (its call ended, its upstream released), not when the generator is collected
    error_chunk = GARBLED_CHUNKS["an-error-inside-the-stream"]
    calls, provider = setup(world, StreamScript(batches=(*OUTPUT, (error_chunk,))))
    chat = chat_request()

    async def scenario() -> tuple[StartedCall[ChatExchange], list[bytes], bool]:
        call = await start(calls, world.key, chat)
        pieces = [piece async for piece in messages_events(calls, call, chat)]
        return call, pieces, provider.exchanges[0].released  # before asyncio.run closes leftovers

    call, pieces, released_when_read = asyncio.run(scenario())
    assert released_when_read
    events = anthropic_events(pieces)
    assert events[-1][0] == "error"
    delivered = estimated_usage(input_chars=0, output_chars=len("".join(TEXT)))
    assert billing_of(calls).completed == [(call.opened.request_id, 502, "upstream_stream_broken", delivered)]
    assert billing_of(calls).failed == []
