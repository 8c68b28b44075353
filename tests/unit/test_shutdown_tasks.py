"""The drain guard tracks each request by its task and cancels it only when the deadline cuts
it (adapters/http/drain.py): a cancellation that is not the cut goes on up untouched, a cut
is taken back so the task can still answer, and a stream whose body runs in a task group of
its own (Starlette's ``StreamingResponse``) is cut and ended with its error event."""

import asyncio

import anyio
import pytest
from starlette.types import Message, Receive, Scope, Send

from adapters.http.drain import DrainGuard
from application.shutdown import Shutdown


async def _call(app: DrainGuard, sent: list[Message]) -> int:
    """One request through ``app``; the task's pending cancellations once the guard returns."""

    async def receive() -> Message:
        await anyio.sleep_forever()
        raise AssertionError

    async def send(message: Message) -> None:
        sent.append(message)

    await app({"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}, receive, send)
    task = asyncio.current_task()
    assert task is not None
    return task.cancelling()


async def _waiting(scope: Scope, receive: Receive, send: Send) -> None:
    await anyio.sleep_forever()


def test_a_cancellation_that_is_not_the_cut_goes_on_up_and_the_request_leaves() -> None:
    shutdown = Shutdown(grace_seconds=0)
    sent: list[Message] = []

    async def scenario() -> None:
        request = asyncio.ensure_future(_call(DrainGuard(_waiting, shutdown), sent))
        await asyncio.sleep(0)
        assert shutdown.in_flight == 1
        request.cancel()  # the server's own cancellation, not a drain
        with pytest.raises(asyncio.CancelledError):
            await request

    asyncio.run(scenario())
    assert sent == [] and shutdown.in_flight == 0 and not shutdown.cutting


def test_a_cut_request_is_answered_and_its_task_keeps_no_pending_cancellation() -> None:
    shutdown = Shutdown(grace_seconds=0)
    sent: list[Message] = []

    async def scenario() -> int:
        request = asyncio.ensure_future(_call(DrainGuard(_waiting, shutdown), sent))
        await asyncio.sleep(0)
        report = await shutdown.drain()
        assert (report.in_flight, report.cut, report.unsettled) == (1, 1, 0)
        return await request

    assert asyncio.run(scenario()) == 0
    assert sent[0]["status"] == 503 and b"shutting_down" in sent[1]["body"]


def test_a_stream_whose_body_runs_in_a_task_group_is_cut_with_its_error_event() -> None:
    shutdown = Shutdown(grace_seconds=0)
    sent: list[Message] = []
    recorded: list[str] = []

    async def streaming(scope: Scope, receive: Receive, send: Send) -> None:
        async def body() -> None:
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}
            )
            await send({"type": "http.response.body", "body": b"data: {}\n\n", "more_body": True})
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                with anyio.CancelScope(shield=True):
                    await anyio.sleep(0)  # the billed call records the cut, shielded
                    recorded.append("503" if shutdown.cutting else "499")
                raise

        async with anyio.create_task_group() as group:
            group.start_soon(body)

    async def scenario() -> None:
        request = asyncio.ensure_future(_call(DrainGuard(streaming, shutdown), sent))
        for _ in range(1000):  # until the stream has started (a few loop turns)
            if len(sent) >= 2:
                break
            await asyncio.sleep(0)
        assert len(sent) == 2
        await shutdown.drain()
        await request

    asyncio.run(scenario())
    assert recorded == ["503"]
    assert sent[-1]["more_body"] is False and sent[-1]["body"].startswith(b'data: {"error":')
