"""The hot API routes, run without FastAPI's routing layers.

A request to ``POST /v1/chat/completions`` went through Starlette's exception middleware,
FastAPI's exit-stack middleware, the router, the included router, the route, the
request-response wrapper and FastAPI's request handler (dependency solving) before the
endpoint ran — about a fifth of the event loop's busy samples in a profile at c=32. The
endpoints here take nothing but the ``Request`` and raise only Tallyhub's errors, so this
middleware (inside the request-id middleware and Starlette's server-error middleware)
runs them directly when method and path match exactly, answering their errors with
the same ``response_for`` the app's exception handlers use. Every other request, and
these paths with another method, goes on to FastAPI as before.
"""

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from adapters.http.errors import ANSWERED_ERRORS, response_for

Endpoint = Callable[[Request], Awaitable[Response]]


class HotRoutes:
    def __init__(self, app: ASGIApp, endpoints: dict[tuple[str, str], Endpoint]) -> None:
        self.app = app
        self.endpoints = endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.endpoints.get((scope.get("method", ""), scope.get("path", ""))) if scope["type"] == "http" else None
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except ANSWERED_ERRORS as error:
            response = response_for(error)
        await response(scope, receive, send)
