"""The edge: what every request that is not a hot route (adapters/http/hot_routes.py)
passes before any handler runs. In order:

1. a client address that failed to authenticate too often lately is answered 429
   ``too_many_failed_auth`` (application/auth_throttle.py), its key unchecked; a path or
   query string holding a NUL character is answered 400 (PostgreSQL text cannot hold one:
   a read-model query with it failed);
2. a declared ``Content-Length`` above the route's limit is answered 413
   ``request_too_large`` before a byte of the body is read;
3. under ``/admin/v1`` (but the payments webhook, which authenticates by its signature)
   the admin key is checked, from the headers alone: a wrong key is answered 401 and
   counted as a failure for the throttle, and the body is never read;
4. the body is read, counting bytes as they arrive (chunked bodies declare no length),
   and answered 413 as soon as the limit is passed; then the handler gets it whole.

So nobody without the admin key can make the server hold more than the declared-length
check lets through (nothing), and nobody at all more than the route's limit.

Limits: ``TALLYHUB_ADMIN_MAX_BODY_BYTES`` under ``/admin/v1``, 1 MiB for the webhook,
``TALLYHUB_MAX_BODY_BYTES`` elsewhere. The hot routes never come here: they bound their
bodies in ``read_body`` and check the throttle themselves, at the cost of a dict lookup.
"""

import anyio
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.http.admin_auth import check_admin_key
from adapters.http.errors import response_for
from adapters.http.payments import MAX_BODY_BYTES as WEBHOOK_MAX_BODY_BYTES
from adapters.http.services import RequestTooLarge, bearer_token
from adapters.services import Services
from application.acting import PAYMENTS, acting_as
from application.auth_throttle import AuthThrottle
from domain.errors import AuthenticationFailed, InvalidRequest, TallyhubError, TooManyFailedAuthentications

ADMIN_PREFIX = "/admin/v1"
WEBHOOK_PATH = "/admin/v1/payments/webhook"


def client_address(scope: Scope) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


class EdgeGuard:
    def __init__(self, app: ASGIApp, *, services: Services, throttle: AuthThrottle) -> None:
        self.app = app
        self.services = services
        self.throttle = throttle
        self.body_limit = services.settings.max_body_bytes
        self.admin_body_limit = services.settings.admin_max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            body, actor = await self._admit(scope, receive)
        except TallyhubError as refused:
            await response_for(refused)(scope, receive, send)
            return
        if body is None:  # the client went away while sending
            return
        delivered = False

        async def receive_body() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        if actor is None:
            await self.app(scope, receive_body, send)
            return
        with acting_as(actor):  # the admin events this request records name who sent it
            await self.app(scope, receive_body, send)

    async def _admit(self, scope: Scope, receive: Receive) -> tuple[bytes | None, str | None]:
        """The body, and the actor when the request is an admin command."""
        address = client_address(scope)
        wait = self.throttle.retry_after(address)
        if wait:
            raise TooManyFailedAuthentications(wait)
        path: str = scope["path"]
        if "\x00" in path or b"%00" in scope.get("query_string", b""):
            raise InvalidRequest("the path or query string holds a NUL character")
        admin = path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")
        actor = None
        if path == WEBHOOK_PATH:
            admin, limit, actor = False, WEBHOOK_MAX_BODY_BYTES, PAYMENTS
        else:
            limit = self.admin_body_limit if admin else self.body_limit
        if _declared_length(scope) > limit:
            raise RequestTooLarge(limit)
        if admin:
            actor = await self._check_admin(scope, address)
        return await _read_body(receive, limit), actor

    async def _check_admin(self, scope: Scope, address: str | None) -> str:
        try:
            token = bearer_token(Request(scope))
            return await anyio.to_thread.run_sync(check_admin_key, self.services, token)
        except AuthenticationFailed:
            self.throttle.failed(address)
            raise


def _declared_length(scope: Scope) -> int:
    """The declared ``Content-Length``; 0 when there is none (a chunked body is counted as it comes)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            text = value.strip()
            if not text.isdigit():
                raise InvalidContentLength()
            return int(text) if len(text) < 20 else 1 << 64
    return 0


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(limit)
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class InvalidContentLength(InvalidRequest):
    def __init__(self) -> None:
        super().__init__("the Content-Length header is not a whole number", param="content-length")
