"""``CallerWatch`` (adapters/http/disconnect.py): a plain call's caller leaving before the
provider answers cancels the request's task once, taken back as ``CallerGone``; leaving after
the answer is read cancels nothing; another's cancellation (a shutdown's cut) goes on up."""

import asyncio

import pytest

from adapters.http.disconnect import CallerGone, CallerWatch


class Connection:
    """The server's side: ``receive`` yields ``http.disconnect`` once the peer closes."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()

    async def receive(self) -> dict[str, str]:
        await self.closed.wait()
        return {"type": "http.disconnect"}


async def bounded(condition: asyncio.Event) -> None:
    await asyncio.wait_for(condition.wait(), timeout=5)


def test_a_caller_gone_before_the_answer_cancels_the_call_once_as_caller_gone() -> None:
    async def run() -> tuple[int, bool]:
        connection, answer = Connection(), asyncio.get_running_loop().create_future()
        reached = asyncio.Event()

        async def plain_call() -> None:
            with CallerWatch(connection.receive):
                reached.set()
                await answer  # the provider has not answered

        call = asyncio.create_task(plain_call())
        await bounded(reached)
        connection.closed.set()
        with pytest.raises(CallerGone):
            await call
        return call.cancelling(), answer.cancelled()

    assert asyncio.run(run()) == (0, True)  # taken back; the awaited answer itself cancelled


def test_a_caller_that_stays_is_never_cancelled_and_the_watch_ends_with_the_answer() -> None:
    async def run() -> tuple[bytes, bool, int]:
        connection, answer = Connection(), asyncio.get_running_loop().create_future()
        watches: list[CallerWatch] = []

        async def plain_call() -> bytes:
            with CallerWatch(connection.receive) as watch:
                watches.append(watch)
                answered = await answer
                watch.answered()
                connection.closed.set()  # the caller leaves after the answer was read
                await asyncio.sleep(0)  # the charge's awaits: not cancelled
                await asyncio.sleep(0)
                return bytes(answered)

        call = asyncio.create_task(plain_call())
        asyncio.get_running_loop().call_later(0.01, answer.set_result, b"{}")
        result = await call
        watcher = watches[0].watcher
        await asyncio.wait([watcher], timeout=5)
        return result, watcher.cancelled(), call.cancelling()

    assert asyncio.run(run()) == (b"{}", True, 0)


@pytest.mark.parametrize("caller_leaves", [True, False], ids=["with-the-callers-departure", "alone"])
def test_a_shutdowns_cut_goes_on_up(caller_leaves: bool) -> None:
    async def run() -> int:
        connection, answer = Connection(), asyncio.get_running_loop().create_future()
        reached = asyncio.Event()

        async def plain_call() -> None:
            with CallerWatch(connection.receive):
                reached.set()
                await answer

        call = asyncio.create_task(plain_call())
        await bounded(reached)
        if caller_leaves:
            connection.closed.set()
        call.cancel()  # the cut, in the same loop turn as the departure
        with pytest.raises(asyncio.CancelledError):
            await call
        return call.cancelling()

    assert asyncio.run(run()) == 1  # the watch took back its own only: the drain guard's stays
