"""The one place where errors become HTTP responses in OpenAI's shape:
``{"error": {"message", "type", "param", "code"}}`` with an honest status.

Every status the API answers an error with is chosen here, from the error's class
(domain/errors.py): the code is the class's ``code``. The one error that brings its
status is ``UpstreamError`` — the provider's failure as the caller should see it
(adapters/providers/errors.py). Anything else is a bug: a 500 ``internal_error`` that
says nothing of it.

``status_of`` is that choice alone: the composition root (adapters/bootstrap.py) gives it
to the billing (application/ports.py ``StatusOf``), which records a failed or refused
request with it (application/billing.py, calls.py): the request log keeps the status the
caller is answered with, chosen here and nowhere else.

With ``TALLYHUB_TOPUP_URL`` set, ``create_app`` wraps the app in ``TopUpLinks``: every 402
``insufficient_credits`` answered inside it (OpenAI's shape here, Anthropic's in
messages.py) carries the account's top-up link in its message and in ``topup_url``.
Unset, the middleware is not installed and the answers are exactly as before."""

import logging
import sqlite3
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import eventsourcing.persistence as es_persistence
import orjson
import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from adapters.http.rate_limit_headers import rate_limit_headers
from adapters.http.services import RequestTooLarge
from application.portal import topup_link
from application.ports import Admission
from domain.errors import (
    AlreadyExists,
    AuthenticationFailed,
    InsufficientCredits,
    InvalidRequest,
    MalformedUpstreamAnswer,
    NotFound,
    NotInitialised,
    PermissionDenied,
    ProjectionStopped,
    RateLimitExceeded,
    SecretError,
    SpendCapReached,
    TallyhubError,
    TooManyFailedAuthentications,
    UpstreamError,
)

# The store (event store or read models) unreachable, refusing connections or out of space:
# answered 503 ``store_unavailable`` — nothing was served unbilled — never a 500 (issue 20).
STORE_OUTAGES: tuple[type[Exception], ...] = (
    es_persistence.OperationalError,
    es_persistence.InterfaceError,
    psycopg.OperationalError,  # psycopg_pool.PoolTimeout among them
    psycopg.InterfaceError,
    sqlite3.OperationalError,  # "database or disk is full", "disk I/O error", a lock held too long
)
STORE_UNAVAILABLE = "store_unavailable"
log = logging.getLogger("tallyhub.http")

# The errors the API answers with ``response_for`` (any other is a 500 that leaks nothing).
ANSWERED_ERRORS: tuple[type[Exception], ...] = (TallyhubError, *STORE_OUTAGES)

# (status, OpenAI error type) per error class; the first matching base class wins.
_STATUS: list[tuple[type[Exception], int, str]] = [
    (RequestTooLarge, 413, "invalid_request_error"),
    (InvalidRequest, 400, "invalid_request_error"),  # InvalidAmount (domain/money.py) among them
    (AuthenticationFailed, 401, "authentication_error"),
    (InsufficientCredits, 402, "insufficient_credits"),
    (PermissionDenied, 403, "permission_error"),
    (NotFound, 404, "invalid_request_error"),
    (AlreadyExists, 409, "invalid_request_error"),
    (NotInitialised, 503, "server_error"),
    (ProjectionStopped, 503, "server_error"),
    (SecretError, 500, "server_error"),
    (MalformedUpstreamAnswer, 502, "upstream_error"),
    (SpendCapReached, 429, "rate_limit_error"),  # with Retry-After
    (RateLimitExceeded, 429, "rate_limit_error"),  # with Retry-After and OpenAI's x-ratelimit-* headers
    (TooManyFailedAuthentications, 429, "rate_limit_error"),  # with Retry-After
]

_HTTP_CODES = {
    400: "invalid_request",
    401: "invalid_api_key",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def error_body(
    message: str, *, type_: str, code: str | None, param: str | None = None, extra: dict[str, Any] | None = None
) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code, **(extra or {})}})


_TOPUP_TEMPLATE: ContextVar[str | None] = ContextVar("tallyhub_topup_template", default=None)


class TopUpLinks:
    """ASGI middleware: the requests it passes answer a 402 with ``template`` filled in
    (``{account}``: the account's id, URL-encoded). Installed only when the setting is set."""

    def __init__(self, app: ASGIApp, template: str) -> None:
        self.app = app
        self.template = template

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = _TOPUP_TEMPLATE.set(self.template)
        try:
            await self.app(scope, receive, send)
        finally:
            _TOPUP_TEMPLATE.reset(token)


def error_message(exc: Exception) -> tuple[str, str | None]:
    """The error's message and, for a 402 inside ``TopUpLinks``, its top-up link (also in the message)."""
    template = _TOPUP_TEMPLATE.get()
    if template is None or not isinstance(exc, InsufficientCredits):
        return str(exc), None
    link = topup_link(template, exc.account_id)
    return f"{exc}; top up at {link}", link


def error_response(
    status: int,
    message: str,
    *,
    type_: str,
    code: str | None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    return Response(
        error_body(message, type_=type_, code=code, param=param, extra=extra),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _classified(exc: Exception) -> tuple[int, str] | None:
    """(status, OpenAI error type) of an error the API answers; None for a bug (a 500)."""
    if isinstance(exc, UpstreamError):
        status = exc.status  # the provider's failure relayed: data the error carries
        if status == 429:
            return status, "rate_limit_error"
        return status, ("invalid_request_error" if status < 500 else "upstream_error")
    for cls, status, type_ in _STATUS:
        if isinstance(exc, cls):
            return status, type_
    if isinstance(exc, STORE_OUTAGES):
        return 503, "server_error"
    return None


def status_of(exc: Exception) -> int:
    """The HTTP status the API answers ``exc`` with (``response_for``'s): its class's, an
    ``UpstreamError``'s own, else 500."""
    classified = _classified(exc)
    return 500 if classified is None else classified[0]


def response_for(exc: Exception) -> Response:
    classified = _classified(exc)
    if classified is None:
        return error_response(500, "internal error", type_="server_error", code="internal_error")
    status, type_ = classified
    if isinstance(exc, STORE_OUTAGES):  # what the store said stays in the server's log
        log.warning("answered 503 store_unavailable: %s: %s", type(exc).__name__, exc)
        return error_response(status, "the store is unavailable; try again", type_=type_, code=STORE_UNAVAILABLE)
    headers = None
    if isinstance(exc, (SpendCapReached, TooManyFailedAuthentications)):
        headers = {"retry-after": str(exc.retry_after_seconds)}
    elif isinstance(exc, RateLimitExceeded):
        headers = {"retry-after": str(exc.retry_after_seconds)}
    elif isinstance(exc, UpstreamError) and exc.retry_after:
        headers = {"retry-after": exc.retry_after}
    admission = getattr(exc, "admission", None)  # any error of an admitted request: its limits' headers
    if isinstance(admission, Admission):
        headers = {**(headers or {}), **rate_limit_headers(admission)}
    code = exc.code if isinstance(exc, TallyhubError) else None
    message, link = error_message(exc)
    return error_response(
        status,
        message,
        type_=type_,
        code=code,
        param=getattr(exc, "param", None),
        headers=headers,
        extra=None if link is None else {"topup_url": link},
    )


INTERNAL_ERROR = error_body("internal error", type_="server_error", code="internal_error")


def install_error_handlers(app: FastAPI, on_auth_failed: Callable[[Request], None] | None = None) -> None:
    """``on_auth_failed``: told of every request answered 401 (the failed-auth throttle)."""

    async def on_tallyhub_error(request: Request, exc: Exception) -> Response:
        if on_auth_failed is not None and isinstance(exc, AuthenticationFailed):
            on_auth_failed(request)
        return response_for(exc)

    async def on_unexpected_error(request: Request, exc: Exception) -> Response:
        # Starlette's ServerErrorMiddleware calls this for any exception nothing else answered
        # (then re-raises it for the server's log): a JSON 500 that says nothing of the error.
        # It runs outside the request-id middleware, so the id is added here from the scope.
        request_id = request.scope.get("state", {}).get("request_id")
        headers = {"x-request-id": str(request_id)} if request_id else None
        return Response(INTERNAL_ERROR, status_code=500, media_type="application/json", headers=headers)

    async def on_http_exception(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(
            exc.status_code,
            str(exc.detail),
            type_="invalid_request_error",
            code=_HTTP_CODES.get(exc.status_code),
            headers=getattr(exc, "headers", None),
        )

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first: dict[str, Any] = exc.errors()[0] if exc.errors() else {}
        location = [str(part) for part in first.get("loc", ()) if part != "body"]
        return error_response(
            400,
            f"{'.'.join(location) or 'body'}: {first.get('msg', 'invalid request')}",
            type_="invalid_request_error",
            code="invalid_request",
            param=".".join(location) or None,
        )

    for answered in ANSWERED_ERRORS:
        app.add_exception_handler(answered, on_tallyhub_error)
    app.add_exception_handler(StarletteHTTPException, on_http_exception)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_unexpected_error)
