"""What every fake upstream shares: a real aiohttp server, run from a thread of its own.

A :class:`FakeServer` subclass speaks one provider's wire format: it lists its routes in
:meth:`FakeServer.build_routes`, names its :class:`Script` type in ``script_type`` and takes
one behaviour per model request from :meth:`FakeServer._next_script`.  The base keeps these
invariants:

* a request the fake records (all but the ``/_fake/`` control calls, unless the subclass
  narrows :meth:`FakeServer._should_record`) is appended to ``requests`` in arrival order,
  body read and parsed, *before* its handler runs; ``request[SEQ_KEY]`` numbers recorded
  requests from 1, and :meth:`FakeServer.reset` starts the count again;
* ``RecordedRequest.disconnected`` is set when the client went away before the answer was
  complete, never when the fake itself dropped the connection (:func:`drop_connection`);
* scripts are consumed FIFO, one per ``_next_script`` call; an empty queue gives the script
  type's default, a normal answer;
* ``requests``, the script queue and the sequence number change only under one lock, so a
  test on the main thread may read them while the server thread writes;
* :meth:`FakeServer.start` serves from a daemon thread with its own event loop and returns
  once listening; the port bound first is kept, so a restarted fake listens where it did.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Self, TypeVar

import orjson
from aiohttp import web

__all__ = [
    "DROPPED_KEY",
    "RECORD_KEY",
    "SEQ_KEY",
    "FakeServer",
    "RecordedRequest",
    "Script",
    "drop_connection",
    "flat_headers",
    "json_response",
    "parse_json",
    "serve_until_signalled",
]

MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Script:
    """Base of the fakes' scripted behaviours: frozen dataclasses whose unset fields mean "normal"."""

    def __or__(self, other: Self) -> Self:
        """Merge: every field ``other`` sets (non-default) wins; dict fields merge key by key."""
        if not isinstance(other, type(self)):
            return NotImplemented
        default = type(self)()
        changes: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(other, f.name)
            if value != getattr(default, f.name):
                changes[f.name] = {**getattr(self, f.name), **value} if isinstance(value, dict) else value
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls(**data)


@dataclass
class RecordedRequest:
    """One request as the fake received it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    json: Any  # parsed body, or None when absent / not JSON
    body: bytes = b""
    query: dict[str, str] = field(default_factory=dict)
    # Set when the client went away before the response was complete.
    disconnected: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["body"] = self.body.decode("utf-8", "replace")
        return data


SEQ_KEY = web.RequestKey("fake_seq", int)
RECORD_KEY = web.RequestKey("fake_record", RecordedRequest)
DROPPED_KEY = web.RequestKey("fake_dropped", bool)

ScriptT = TypeVar("ScriptT", bound=Script)


# ---------------------------------------------------------------------- helpers for handlers


def parse_json(body: bytes) -> Any:
    """The parsed body, or None when it is empty or not JSON."""
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None


def flat_headers(request: web.Request) -> dict[str, str]:
    """Header names lower-cased; a repeated header's values joined with ``", "``."""
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json", headers=headers)


def drop_connection(request: web.Request, *, reset: bool = False) -> web.StreamResponse:
    """Close the TCP connection (FIN) mid-answer; aiohttp ignores the failed write_eof.
    With ``reset``, abort it instead: a TCP reset (RST, ``SO_LINGER`` 0), what a crashed
    proxy or a killed process sends."""
    request[DROPPED_KEY] = True
    transport = request.transport
    if transport is not None:
        if reset:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        else:
            transport.close()
    return web.Response()


# ---------------------------------------------------------------------- the server


class FakeServer(Generic[ScriptT]):
    """A fake upstream on ``host`` (an ephemeral port unless ``port`` is given)."""

    label: ClassVar[str] = "upstream"  # the provider's name, for the thread and start-up errors
    base_path: ClassVar[str] = ""  # what ``base_url`` adds to the server root, e.g. "/v1"
    control_api: ClassVar[bool] = False  # serve /_fake/requests, /_fake/script and /_fake/reset
    script_type: type[ScriptT]

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.requests: list[RecordedRequest] = []
        self._scripts: deque[ScriptT] = deque()
        self._lock = threading.Lock()
        self._seq = 0
        self._defaults: dict[str, Any] = {}
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- hooks

    def build_routes(self) -> list[web.RouteDef]:
        """The provider's routes, its catch-all last."""
        raise NotImplementedError

    def _should_record(self, request: web.Request) -> bool:
        return not request.path.startswith("/_fake/")

    def _record_of(self, request: web.Request, body: bytes) -> RecordedRequest:
        return RecordedRequest(
            request.method, request.path, flat_headers(request), parse_json(body), body, dict(request.query)
        )

    def _restore_on_reset(self, *names: str) -> None:
        """Remember these attributes' current values: :meth:`reset` puts them back."""
        self._defaults.update({name: getattr(self, name) for name in names})

    # -- test API

    @property
    def base_url(self) -> str:
        if not self.port:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://{self.host}:{self.port}{self.base_path}"

    def script(self, *behaviours: ScriptT) -> None:
        """Queue behaviours for the next model requests (FIFO, one per request)."""
        with self._lock:
            self._scripts.extend(behaviours)

    @property
    def pending_scripts(self) -> int:
        with self._lock:
            return len(self._scripts)

    def reset(self) -> None:
        """Forget recorded requests and queued scripts; restore the constructor's settings."""
        with self._lock:
            self.requests.clear()
            self._scripts.clear()
            self._seq = 0
            for name, value in self._defaults.items():
                setattr(self, name, value)

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Poll ``predicate`` until true or ``timeout`` (e.g. to see a disconnect land)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        if not self.wait_until(lambda: len(self.requests) >= count, timeout):
            raise TimeoutError(f"expected {count} requests, got {len(self.requests)}")
        return list(self.requests)

    # -- lifecycle

    def start(self) -> Self:
        """Serve from a daemon thread with its own event loop; returns once listening."""
        if self._thread is not None:
            raise RuntimeError("already started")
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._serve_in_thread, args=(ready, failure), name=f"fake-{self.label.lower()}-upstream", daemon=True
        )
        self._thread.start()
        if not ready.wait(10) or failure:
            self._thread = None
            raise RuntimeError(f"fake {self.label} upstream failed to start") from (failure[0] if failure else None)
        return self

    def stop(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._thread = self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _serve_in_thread(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self.start_async())
        except BaseException as exc:  # report bind errors to the caller of start()
            failure.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self.stop_async())
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def start_async(self) -> None:
        """Bind and listen on the *current* event loop (used by the thread and by subprocesses)."""
        runner = web.AppRunner(self.build_app(), access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await runner.setup()
        await web.TCPSite(runner, self.host, self.port).start()
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def stop_async(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._record_middleware], client_max_size=MAX_BODY_BYTES)
        if self.control_api:
            app.add_routes(
                [
                    web.get("/_fake/requests", self._control_requests),
                    web.post("/_fake/script", self._control_script),
                    web.post("/_fake/reset", self._control_reset),
                ]
            )
        app.add_routes(self.build_routes())
        return app

    # -- recording and scripts

    @web.middleware
    async def _record_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not self._should_record(request):
            return await handler(request)
        record = self._record_of(request, await request.read())
        with self._lock:
            self.requests.append(record)
            self._seq += 1
            request[SEQ_KEY] = self._seq
        request[RECORD_KEY] = record
        try:
            return await handler(request)
        except (asyncio.CancelledError, ConnectionResetError):
            if not request.get(DROPPED_KEY):
                record.disconnected = True
            raise

    def _next_script(self) -> ScriptT:
        with self._lock:
            return self._scripts.popleft() if self._scripts else self.script_type()

    # -- control API (subprocess use; neither authenticated nor recorded)

    async def _control_requests(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            records = [record.to_dict() for record in self.requests]
        return json_response(records)

    async def _control_script(self, request: web.Request) -> web.StreamResponse:
        payload = orjson.loads(await request.read() or b"[]")
        items = payload if isinstance(payload, list) else [payload]
        self.script(*(self.script_type.from_dict(item) for item in items))
        return json_response({"queued": len(items)})

    async def _control_reset(self, request: web.Request) -> web.StreamResponse:
        self.reset()
        return json_response({"reset": True})


async def serve_until_signalled(server: FakeServer[Any]) -> None:
    """Subprocess use: listen, print the bound port on stdout, serve until SIGINT or SIGTERM."""
    await server.start_async()
    print(server.port, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop_async()
