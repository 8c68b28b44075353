"""The hot path (adapters/http/hot_path.py) answers exactly as the layers it replaces did: a
request to a hot route through ``HotPath`` sends the same messages and tells the access log
the same status as through Starlette's ``ServerErrorMiddleware``, ``RequestIdMiddleware``,
``AccessLogMiddleware`` and ``DrainGuard`` around the same ``HotRoutes`` (hypothesis, over
the endpoint's answer: plain or streamed, its status, a Tallyhub error, an unexpected
exception; the throttle; the drain). And the app sends the hot routes, and only those, down
the hot path."""

import asyncio
import logging
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message

from adapters.access_log import JsonAccessLog
from adapters.http.access_log import AccessLogMiddleware
from adapters.http.drain import DrainGuard
from adapters.http.errors import INTERNAL_ERROR, install_error_handlers
from adapters.http.event_stream import EventStreamResponse, LastPiece
from adapters.http.hot_path import HotPath, TallyhubApp
from adapters.http.hot_routes import HotRoutes
from adapters.http.request_id import RequestIdMiddleware
from application.auth_throttle import AuthThrottle
from application.shutdown import Shutdown
from domain.errors import AuthenticationFailed, InvalidRequest

PATH = "/v1/chat/completions"


class RecordedAnswers(JsonAccessLog):
    """The access log's edge calls, without the latency (a clock's)."""

    def __init__(self) -> None:
        super().__init__(logging.getLogger("tests.hot_path"))
        self.calls: list[tuple[UUID, str, int]] = []

    def answered(self, request_id: UUID, path: str, status: int, latency_ms: float) -> None:
        self.calls.append((request_id, path, status))


Behaviour = dict[str, Any]

behaviours = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["plain", "stream", "answered_error", "auth_error", "bug", "bug_after_start"]),
        "status": st.sampled_from([200, 201, 400, 401, 402, 429, 502]),
        "chunks": st.integers(min_value=0, max_value=4),
        "draining": st.booleans(),
        "throttled": st.booleans(),
    }
)


def endpoint_for(behaviour: Behaviour) -> Any:
    async def pieces() -> Any:
        for n in range(behaviour["chunks"]):
            yield f"data: {n}\n\n".encode()
        if behaviour["kind"] == "bug_after_start":
            raise RuntimeError("a bug in the middle of a stream")
        yield LastPiece(b"data: [DONE]\n\n")

    async def endpoint(request: Request) -> Response:
        kind = behaviour["kind"]
        if kind == "plain":
            return Response(b'{"ok":true}', status_code=behaviour["status"], media_type="application/json")
        if kind in ("stream", "bug_after_start"):
            return EventStreamResponse(pieces(), headers={"x-extra": "1"})
        if kind == "answered_error":
            raise InvalidRequest("no", param="model")
        if kind == "auth_error":
            raise AuthenticationFailed("bad key")
        raise RuntimeError("a bug")

    return endpoint


async def _on_error(request: Request, exc: Exception) -> Response:
    """The app's own 500 handler (install_error_handlers), taken from an app as create_app does."""
    app = TallyhubApp()
    install_error_handlers(app)
    handler: Any = app.exception_handlers[Exception]
    response: Response = await handler(request, exc)
    return response


def chains(behaviour: Behaviour) -> tuple[tuple[ASGIApp, RecordedAnswers, Shutdown], ...]:
    """(the layers as create_app stacked them before the hot path, the hot path), each with
    its own throttle, access log and drain, in the same state."""
    built = []
    for hot in (False, True):
        throttle = AuthThrottle(limit=1)
        if behaviour["throttled"]:
            throttle.failed("10.0.0.1")
        routes = HotRoutes({("POST", PATH): endpoint_for(behaviour)}, throttle)
        log = RecordedAnswers()
        shutdown = Shutdown(grace_seconds=0)
        if behaviour["draining"]:
            shutdown.begin()
        app: ASGIApp
        if hot:
            app = HotPath(routes, shutdown=shutdown, access_log=log, on_error=_on_error)
        else:
            app = ServerErrorMiddleware(
                RequestIdMiddleware(AccessLogMiddleware(DrainGuard(routes, shutdown), access_log=log)),
                handler=_on_error,
            )
        built.append((app, log, shutdown))
    return tuple(built)


async def _one(app: ASGIApp) -> tuple[list[Message], UUID | None, str | None]:
    """The messages sent (the request id's header value replaced by a mark), the request's id,
    and the exception that went on up (its message)."""
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": PATH,
        "headers": [],
        "query_string": b"",
        "client": ("10.0.0.1", 5000),
        "state": {},
    }
    sent: list[Message] = []
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def receive() -> Message:
        await never
        raise AssertionError

    async def send(message: Message) -> None:
        sent.append(message)

    raised = None
    try:
        await app(scope, receive, send)
    except RuntimeError as exc:
        raised = str(exc)
    request_id = scope["state"].get("request_id")
    for message in sent:
        if message["type"] == "http.response.start":
            message["headers"] = [
                (name, b"<id>" if name == b"x-request-id" and value == str(request_id).encode() else value)
                for name, value in message["headers"]
            ]
    return sent, request_id, raised


@settings(max_examples=150, deadline=None)
@given(behaviours)
def test_the_hot_path_answers_as_the_layers_it_replaces(behaviour: Behaviour) -> None:
    (layered, layered_log, layered_drain), (hot, hot_log, hot_drain) = chains(behaviour)

    async def both() -> tuple[Any, Any]:
        return await asyncio.create_task(_one(layered)), await asyncio.create_task(_one(hot))

    (layered_sent, layered_id, layered_raised), (hot_sent, hot_id, hot_raised) = asyncio.run(both())
    assert hot_sent == layered_sent
    assert hot_raised == layered_raised
    assert [(path, status) for _, path, status in hot_log.calls] == [
        (path, status) for _, path, status in layered_log.calls
    ]
    assert [call[0] for call in hot_log.calls] == ([hot_id] if hot_log.calls else [])
    assert hot_drain.in_flight == layered_drain.in_flight == 0
    starts = [message for message in hot_sent if message["type"] == "http.response.start"]
    assert len(starts) == 1  # one answer, and it carries the id
    assert (b"x-request-id", b"<id>") in starts[0]["headers"]


def test_an_unexpected_exception_is_the_apps_json_500_with_the_id_and_goes_on_up() -> None:
    sent, request_id, raised = asyncio.run(_one(chains({**_PLAIN, "kind": "bug"})[1][0]))
    assert raised == "a bug" and request_id is not None
    assert sent[0]["status"] == 500 and (b"x-request-id", b"<id>") in sent[0]["headers"]
    assert sent[1]["body"] == INTERNAL_ERROR


def test_a_draining_gateway_refuses_a_hot_request_503_with_the_id() -> None:
    sent, _, raised = asyncio.run(_one(chains({**_PLAIN, "draining": True})[1][0]))
    assert raised is None and sent[0]["status"] == 503
    assert (b"connection", b"close") in sent[0]["headers"] and (b"x-request-id", b"<id>") in sent[0]["headers"]


_PLAIN: Behaviour = {"kind": "plain", "status": 200, "chunks": 0, "draining": False, "throttled": False}


# --- the app's dispatch ---------------------------------------------------------------


def _app(seen: list[str]) -> TallyhubApp:
    app = TallyhubApp()

    @app.get("/other")
    async def other() -> dict[str, str]:
        seen.append("fastapi")
        return {"ok": "1"}

    async def hot(scope: Any, receive: Any, send: Any) -> None:
        assert scope["app"] is app  # as Starlette sets it: endpoints read request.app.state
        seen.append("hot")
        await Response(b"hot")(scope, receive, send)

    async def endpoint(request: Request) -> Response:
        raise AssertionError  # never called: the path above stands in for the hot path

    app.serve_hot(HotRoutes({("POST", PATH): endpoint}, AuthThrottle()), hot)
    return app


@pytest.mark.parametrize(
    ("method", "path", "way", "status"),
    [
        ("POST", PATH, "hot", 200),
        ("GET", PATH, None, 404),  # another method: FastAPI's (here no such route)
        ("POST", PATH + "/", None, 404),  # exact paths only
        ("GET", "/other", "fastapi", 200),
    ],
)
def test_the_app_sends_exactly_the_hot_routes_down_the_hot_path(
    method: str, path: str, way: str | None, status: int
) -> None:
    seen: list[str] = []
    with TestClient(_app(seen)) as client:  # the lifespan goes FastAPI's way
        response = client.request(method, path, follow_redirects=False)
    assert response.status_code == status or (status == 404 and response.status_code in (404, 405, 307))
    assert seen == ([way] if way else [])
