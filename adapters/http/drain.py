"""The HTTP side of the graceful shutdown (application/shutdown.py decides the policy).

``DrainGuard``, a middleware inside ``HealthRoutes`` (``/health`` answers 200 and ``/ready``
503 throughout), has the ``Shutdown`` track every other request by its task: a set entry
and a ``send`` that notes how far the answer got, nothing else per request (no cancel scope).
While draining, a new request is answered 503 ``shutting_down`` with ``connection: close``
and nothing is held or charged. When the deadline cuts a request, its task is cancelled
once (the billed call records the cut, application/streams.py and calls.py; its ledger
writes run on under ``asyncio.shield``), the guard takes that cancellation back
(``uncancel``) and ends the answer: a 503 ``shutting_down`` if nothing was sent yet, else,
for a stream, a last error event (OpenAI's chat ``data: {"error": ...}`` frame; the
``event: error`` of Anthropic's Messages on ``/v1/messages`` and of the Responses API on
``/v1/responses``) and the end of the body, so the caller sees why its stream stopped.

The hot routes skip the middleware stack: the hot path (adapters/http/hot_path.py) tracks
them with the same ``run_tracked``.

``watch_signals`` chains the drain in front of the server's own SIGTERM and SIGINT handlers
(uvicorn's, which stop accepting connections and wait for the open ones): installed by the
app's lifespan in the process's main thread when a server handles those signals, never in
tests that run the app in process.
"""

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.http.errors import error_body
from application.shutdown import SHUTDOWN_STATUS, SHUTTING_DOWN, Shutdown

log = logging.getLogger("tallyhub.shutdown")

MESSAGE = "the gateway is shutting down; send the request again"
REFUSED = error_body(MESSAGE, type_="server_error", code=SHUTTING_DOWN)
CUT = "the gateway shut down before the answer was complete"
OPENAI_CUT_FRAME = (
    b"data: "
    + orjson.dumps({"error": {"message": CUT, "type": "server_error", "param": None, "code": SHUTTING_DOWN}})
    + b"\n\n"
)
ANTHROPIC_CUT_FRAME = (
    b"event: error\ndata: " + orjson.dumps({"type": "error", "error": {"type": "api_error", "message": CUT}}) + b"\n\n"
)
RESPONSES_CUT_FRAME = (
    b"event: error\ndata: "
    + orjson.dumps({"type": "error", "code": SHUTTING_DOWN, "message": CUT, "param": None})
    + b"\n\n"
)
CUT_FRAMES = {"/v1/messages": ANTHROPIC_CUT_FRAME, "/v1/responses": RESPONSES_CUT_FRAME}  # else OpenAI's chat frame


async def _answer_refused(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": SHUTDOWN_STATUS,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(REFUSED)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": REFUSED})


class InFlight:
    """One request in flight: its task, cancelled only if the deadline cuts it, and its
    ``send`` (``watched``), noting how far its answer got. Every message of the answer,
    the guard's own refusals and cut endings too, goes through ``watched``: the hot path
    (adapters/http/hot_path.py) overrides it to add the request id as well, one wrapper
    for both."""

    __slots__ = ("task", "send", "start", "finished", "cut")

    def __init__(self, task: "asyncio.Task[Any]", send: Send) -> None:
        self.task = task
        self.send = send
        self.start: Message | None = None
        self.finished = False
        self.cut = False

    def cancel(self) -> None:
        """The deadline cuts the request (``Shutdown.cut``): its task is cancelled, once."""
        self.cut = True
        self.task.cancel()

    async def watched(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.start = message
        elif not message.get("more_body", False):
            self.finished = True
        await self.send(message)

    async def end_cut(self, path: str) -> None:
        """The request was cut: end its answer, saying so."""
        if self.finished:
            return
        if self.start is None:
            await _answer_refused(self.watched)
            return
        frame = b""
        if _event_stream(self.start):
            frame = CUT_FRAMES.get(path, OPENAI_CUT_FRAME)
        await self.watched({"type": "http.response.body", "body": frame, "more_body": False})


def _event_stream(start: Message) -> bool:
    return any(
        name.lower() == b"content-type" and value.startswith(b"text/event-stream")
        for name, value in start.get("headers", ())
    )


class DrainGuard:
    def __init__(self, app: ASGIApp, shutdown: Shutdown) -> None:
        self.app = app
        self.shutdown = shutdown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        task = asyncio.current_task()
        assert task is not None
        await run_tracked(self.shutdown, InFlight(task, send), self.app, scope, receive)


async def run_tracked(shutdown: Shutdown, request: InFlight, app: ASGIApp, scope: Scope, receive: Receive) -> None:
    """``app`` answers the request, tracked by ``shutdown`` (``request.task`` is the running
    task); refused 503 while draining; a cut ends its answer. The drain guard's work, also
    the hot path's."""
    if not shutdown.enter(request):
        await _answer_refused(request.watched)
        return
    try:
        await app(scope, receive, request.watched)
    except asyncio.CancelledError:
        if not request.cut:
            raise  # not ours (the server's own cancellation): it goes on up
        request.task.uncancel()  # the cut ends here: the caller is told
        try:
            await request.end_cut(scope["path"])
        except OSError:
            pass  # the caller is gone as well: nothing left to tell it
    finally:
        shutdown.leave(request)


# --- signals ------------------------------------------------------------------------------

Handler = Callable[[int, FrameType | None], Any]
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class SignalWatch:
    """The drain started by SIGTERM or SIGINT, before the server's own handler runs."""

    def __init__(self, shutdown: Shutdown, loop: asyncio.AbstractEventLoop) -> None:
        self.shutdown = shutdown
        self.loop = loop
        self.drain: asyncio.Task[Any] | None = None
        self._installed: dict[int, tuple[Handler, Handler]] = {}

    def install(self) -> "SignalWatch":
        if threading.current_thread() is not threading.main_thread():
            return self  # signals reach the main thread only: nothing to chain in here
        for signum in SIGNALS:
            previous = signal.getsignal(signum)
            if not callable(previous):
                continue  # no server handles it (the default or ignored): leave it alone
            handler = self._chained(previous)
            signal.signal(signum, handler)
            self._installed[signum] = (handler, previous)
        return self

    def _chained(self, previous: Handler) -> Handler:
        def handler(signum: int, frame: FrameType | None) -> None:
            self.loop.call_soon_threadsafe(self._start)
            previous(signum, frame)

        return handler

    def _start(self) -> None:
        if self.drain is None:
            self.drain = self.loop.create_task(self.shutdown.drain(), name="tallyhub-drain")

    def close(self) -> None:
        """Put the server's handlers back (where ours is still the one installed)."""
        for signum, (handler, previous) in self._installed.items():
            if signal.getsignal(signum) is handler:
                signal.signal(signum, previous)
        self._installed.clear()
        if self.drain is not None and not self.drain.done():
            self.drain.cancel()


def watch_signals(shutdown: Shutdown) -> SignalWatch:
    return SignalWatch(shutdown, asyncio.get_running_loop()).install()
