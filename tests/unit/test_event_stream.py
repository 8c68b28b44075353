"""``EventStreamResponse`` (adapters/http/event_stream.py): each piece one send, a ``LastPiece``
sent with the end of the body; a caller gone cancels the body where it waits, the answer ends
quietly and the task keeps no cancellation; any other cancellation goes on up; the watch never
outlives the response."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from starlette.types import Message

from adapters.http.event_stream import EventStreamResponse, LastPiece

SCOPE = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}


class Connection:
    """A server's side of one request: what was sent, and a caller that may leave."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.left = asyncio.Event()

    async def receive(self) -> Message:
        await self.left.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    def bodies(self) -> list[tuple[bytes, bool]]:
        return [(m["body"], m["more_body"]) for m in self.sent if m["type"] == "http.response.body"]


def test_each_piece_is_one_send_and_the_last_piece_ends_the_body_in_its_own_send() -> None:
    connection = Connection()

    async def body() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        yield b"data: 2\n\ndata: 3\n\n"
        yield LastPiece(b"data: closing\n\ndata: [DONE]\n\n")
        raise AssertionError("read past the last piece")

    async def scenario() -> None:
        await EventStreamResponse(body(), headers={"cache-control": "no-cache"})(
            SCOPE, connection.receive, connection.send
        )
        await asyncio.sleep(0)  # the watch's cancellation lands
        assert len(asyncio.all_tasks()) == 1  # the watch is gone with the response

    asyncio.run(scenario())
    start = connection.sent[0]
    assert (start["type"], start["status"]) == ("http.response.start", 200)
    assert (b"content-type", b"text/event-stream; charset=utf-8") in start["headers"]
    assert connection.bodies() == [
        (b"data: 1\n\n", True),
        (b"data: 2\n\ndata: 3\n\n", True),
        (b"data: closing\n\ndata: [DONE]\n\n", False),
    ]


def test_a_body_without_a_last_piece_ends_with_an_empty_send() -> None:
    connection = Connection()

    async def body() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"

    asyncio.run(EventStreamResponse(body())(SCOPE, connection.receive, connection.send))
    assert connection.bodies() == [(b"data: 1\n\n", True), (b"", False)]


def test_a_caller_gone_cancels_the_body_where_it_waits_and_the_answer_ends_quietly() -> None:
    connection = Connection()
    seen: list[str] = []
    waiting = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        try:
            waiting.set()
            await asyncio.Event().wait()  # the provider has nothing more yet
        except asyncio.CancelledError:
            seen.append("cancelled")  # the relay charges what was produced here
            raise
        yield b"never"

    async def scenario() -> int:
        response = asyncio.ensure_future(EventStreamResponse(body())(SCOPE, connection.receive, connection.send))
        await waiting.wait()
        connection.left.set()
        await response  # no CancelledError: the watch's own cancellation is taken back
        task = asyncio.current_task()
        assert task is not None
        return task.cancelling()

    assert asyncio.run(scenario()) == 0
    assert seen == ["cancelled"]
    assert connection.bodies() == [(b"data: 1\n\n", True)]  # nothing more: nobody reads it


def test_a_cancellation_that_is_not_the_callers_leaving_goes_on_up() -> None:
    connection = Connection()
    waiting = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        waiting.set()
        await asyncio.Event().wait()
        yield b"never"

    async def scenario() -> None:
        response = asyncio.ensure_future(EventStreamResponse(body())(SCOPE, connection.receive, connection.send))
        await waiting.wait()
        response.cancel()  # a graceful shutdown's cut (adapters/http/drain.py), or the server's own
        with pytest.raises(asyncio.CancelledError):
            await response
        await asyncio.sleep(0)
        assert len(asyncio.all_tasks()) == 1  # the watch did not outlive it

    asyncio.run(scenario())
