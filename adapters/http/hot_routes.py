"""The hot API routes, run without FastAPI's routing layers.

A request to ``POST /v1/chat/completions`` went through Starlette's exception middleware,
FastAPI's exit-stack middleware, the router, the included router, the route, the
request-response wrapper and FastAPI's request handler (dependency solving) before the
endpoint ran — about a fifth of the event loop's busy samples in a profile at c=32. The
endpoints here take nothing but the ``Request`` and raise only Tallyhub's errors, so
``HotRoutes`` runs them directly when method and path match exactly, answering their
errors with the same ``response_for`` the app's exception handlers use. It is the inside
of the hot path (adapters/http/hot_path.py), which the app dispatches these requests to
before FastAPI's own layers; every other request, and these paths with another method,
goes on to FastAPI as before (through the edge layer, adapters/http/edge.py; these
endpoints bound their own bodies in ``read_body``).

The failed-auth throttle (application/auth_throttle.py) is checked here too: an address
with no recent failure costs one dict lookup, and an answer of 401 counts as a failure.
"""

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from adapters.http.disconnect import CallerGone
from adapters.http.errors import ANSWERED_ERRORS, response_for
from application.auth_throttle import AuthThrottle
from application.shutdown import CLIENT_GONE_STATUS
from domain.errors import TooManyFailedAuthentications

Endpoint = Callable[[Request], Awaitable[Response]]
ErrorResponse = Callable[[Exception], Response]


class HotRoutes:
    def __init__(
        self,
        endpoints: dict[tuple[str, str], Endpoint],
        throttle: AuthThrottle,
        error_responses: dict[tuple[str, str], ErrorResponse] | None = None,
    ) -> None:
        """``error_responses``: how an endpoint that does not answer in OpenAI's shape answers
        an error raised before it runs (the throttle's 429), e.g. Anthropic's for /v1/messages."""
        self.endpoints = endpoints
        self.throttle = throttle
        self.error_responses = error_responses or {}

    def handles(self, scope: Scope) -> bool:
        """An HTTP request to one of the hot routes (method and path exactly)."""
        return scope["type"] == "http" and (scope["method"], scope["path"]) in self.endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI, for a request it ``handles``."""
        route = (scope["method"], scope["path"])
        client = scope.get("client")
        address = client[0] if client else None
        wait = self.throttle.retry_after(address)
        if wait:
            answer = self.error_responses.get(route, response_for)
            await answer(TooManyFailedAuthentications(wait))(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            response = await self.endpoints[route](request)
        except ANSWERED_ERRORS as error:
            response = response_for(error)
        except CallerGone:  # a plain call's caller left before the answer (adapters/http/disconnect.py)
            response = Response(status_code=CLIENT_GONE_STATUS)
        if response.status_code == 401:
            self.throttle.failed(address)
        await response(scope, receive, send)
