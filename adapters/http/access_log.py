"""``AccessLogMiddleware``: the HTTP edge's part of the access log (adapters/access_log.py):
each request under ``/v1/`` answered without a record gets its line when it is answered."""

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.access_log import JsonAccessLog


class AccessLogMiddleware:
    """Pure ASGI: tells the access log how each request under ``/v1/`` was answered. Inside
    ``RequestIdMiddleware`` (it reads the request id that one made)."""

    def __init__(self, app: ASGIApp, *, access_log: JsonAccessLog) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not logged_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # no answer started: the server answers 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            log_answer(self.access_log, scope, status, started)


def logged_path(path: str) -> bool:
    """The edge tells the access log of the requests under ``/v1/``."""
    return path.startswith("/v1/")


def log_answer(access_log: JsonAccessLog, scope: Scope, status: int, started: float) -> None:
    """The request of ``scope`` was answered ``status`` (500 when no answer started), ``started``
    being its ``time.perf_counter()`` on arrival. Also the hot path's (adapters/http/hot_path.py)."""
    request_id = scope.get("state", {}).get("request_id")
    if request_id is not None:
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        access_log.answered(request_id, scope["path"], status, latency_ms)
