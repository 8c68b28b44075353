"""The hot path: what a request to a hot route (adapters/http/hot_routes.py) passes, and the
app that sends it there before FastAPI's and Starlette's own layers.

``TallyhubApp`` is the FastAPI app, but a request ``HotRoutes.handles`` (``POST
/v1/chat/completions`` and the other hot routes) skips ``FastAPI.__call__``,
``Starlette.__call__``, Starlette's ``ServerErrorMiddleware``, FastAPI's exception telemetry
middleware (a no-op with telemetry off) and the middleware stack of ``create_app``, and goes
to ``HotPath``, which keeps what each of those layers did for it:

- the request id (``assign_request_id``, as ``RequestIdMiddleware``) and its
  ``x-request-id`` header on every answer, the drain guard's own refusals and cut endings
  included;
- the drain guard's tracking (``run_tracked``, as ``DrainGuard``): 503 while draining, a
  cut ends the answer;
- the access log's line (``log_answer``, as ``AccessLogMiddleware``) with the status of
  the answer's start, 500 when none started;
- an exception nothing answered becomes the app's own 500 handler's answer
  (adapters/http/errors.py, the one ``ServerErrorMiddleware`` calls) unless an answer
  started, and goes on up to the server's log;
- ``scope["app"]`` is the app, as Starlette sets it;
- the top-up links (adapters/http/errors.py ``TopUpLinks``) when configured, as a layer
  around ``HotPath``.

Those layers each wrapped ``send``, so each message of an answer (a stream's every chunk)
passed four wrappers; here it passes one, ``_Answer.watched``, which adds the id to the
start and notes how far the answer got for the drain guard, the access log and the 500.
/health, /ready and every other request take FastAPI's way, through the same layers.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.access_log import JsonAccessLog
from adapters.http.access_log import log_answer, logged_path
from adapters.http.drain import InFlight, run_tracked
from adapters.http.hot_routes import HotRoutes
from adapters.http.request_id import assign_request_id
from application.shutdown import Shutdown

ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]


class TallyhubApp(FastAPI):
    """FastAPI, with the hot routes sent down the hot path once ``serve_hot`` is called."""

    hot_routes: HotRoutes | None = None
    hot_path: ASGIApp | None = None

    def serve_hot(self, routes: HotRoutes, path: ASGIApp) -> None:
        self.hot_routes, self.hot_path = routes, path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        routes, path = self.hot_routes, self.hot_path
        if routes is None or path is None or not routes.handles(scope):
            await super().__call__(scope, receive, send)
            return
        if self.root_path:  # as FastAPI.__call__ and Starlette.__call__ do
            scope["root_path"] = self.root_path
        scope["app"] = self
        await path(scope, receive, send)


class _Answer(InFlight):
    """A hot request's one ``send`` wrapper: the drain guard's notes (``InFlight.watched``)
    and the request id on the answer's start (``RequestIdMiddleware``'s)."""

    __slots__ = ("header",)

    def __init__(self, task: "asyncio.Task[object]", send: Send, header: tuple[bytes, bytes]) -> None:
        super().__init__(task, send)
        self.header = header

    async def watched(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), self.header]
            self.start = message
        elif not message.get("more_body", False):
            self.finished = True
        await self.send(message)


class HotPath:
    """ASGI, for a request ``routes`` handles: the module docstring's layers around it."""

    def __init__(
        self, routes: HotRoutes, *, shutdown: Shutdown, access_log: JsonAccessLog | None, on_error: ErrorHandler
    ) -> None:
        """``on_error``: the app's handler of an unexpected exception (``Exception``'s)."""
        self.routes = routes
        self.shutdown = shutdown
        self.access_log = access_log
        self.on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        answer = _Answer(task, send, assign_request_id(scope))
        try:
            if self.access_log is None or not logged_path(scope["path"]):
                await run_tracked(self.shutdown, answer, self.routes, scope, receive)
            else:
                await self._logged(self.access_log, scope, receive, answer)
        except Exception as exc:  # Starlette's ServerErrorMiddleware, as the app has it
            response = await self.on_error(Request(scope), exc)
            if answer.start is None:
                await response(scope, receive, send)
            raise

    async def _logged(self, access_log: JsonAccessLog, scope: Scope, receive: Receive, answer: _Answer) -> None:
        started = time.perf_counter()
        try:
            await run_tracked(self.shutdown, answer, self.routes, scope, receive)
        finally:
            log_answer(access_log, scope, 500 if answer.start is None else answer.start["status"], started)
