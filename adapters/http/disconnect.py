"""A plain (non-stream) call's caller watched while the provider has not answered.

A stream's caller is watched the same way for as long as it is relayed
(adapters/http/event_stream.py: the relay is cancelled, application/streams.py charges what
was produced). A plain answer is
sent only once the provider has answered, so until then nothing would notice: the call ran
on, was recorded 200 and charged. ``CallerWatch`` closes that gap at the cost of one task per
plain request, created once the body is read and the request opened, cancelled as soon as
the provider's answer is read (``answered``): it awaits the server's ``receive``, which
yields ``http.disconnect`` when the peer closes (no polling). If that comes first, the
request's task is cancelled, once: the billed call records the cancellation as any other
(application/shutdown.py: 499 ``client_disconnected``, hold released, nothing charged;
application/calls.py, adapters/http/chat.py ``complete_answer``), and the watch turns that
cancellation, taken back (``uncancel``), into ``CallerGone``, which the hot routes answer
with a bodiless 499 nobody reads (the access log records it). A cancellation that is not
the watch's alone (a graceful shutdown's cut, adapters/http/drain.py) goes on up as before.

The charge itself (``BilledCalls.complete``) runs after ``answered``: a caller leaving then
is not acted on (the answer is charged and written to a closed connection, as before)."""

import asyncio
from types import TracebackType
from typing import Any

from starlette.types import Receive


class CallerGone(Exception):
    """The caller closed its connection before the provider answered: the call was cancelled."""


class CallerWatch:
    __slots__ = ("task", "watcher", "watching", "cancelled")

    def __init__(self, receive: Receive) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.task: asyncio.Task[Any] = task
        self.watching = True
        self.cancelled = False
        self.watcher = asyncio.get_running_loop().create_task(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass  # the body was read whole before the watch began: nothing else is expected
        if self.watching:
            self.cancelled = True
            self.task.cancel()

    def answered(self) -> None:
        """The provider's answer is read (or the call is over): a caller leaving now is not acted on."""
        if self.watching:
            self.watching = False
            self.watcher.cancel()

    def __enter__(self) -> "CallerWatch":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.answered()
        if not self.cancelled:
            return
        alone = self.task.uncancel() == 0  # taken back; another's cancellation (a cut) stays
        if alone and isinstance(error, asyncio.CancelledError):
            raise CallerGone() from None
