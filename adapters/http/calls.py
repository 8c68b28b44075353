"""The billed life of one API call, shared by every endpoint: open (auth, route, price,
hold) → start an upstream attempt with failover → confirm the hold → complete (charge)
or fail (release).

Every opened request is closed exactly once: a failure to start is recorded here (and
its error re-raised for the caller), including a caller that went away meanwhile; the
endpoint then completes or fails the started call itself. A started call reaches its
endpoint only once its hold is durable, so nothing is answered on a hold that could
still be refused; a hold refused after all abandons the upstream call here.
"""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio
import orjson
from fastapi import Request
from starlette.responses import Response

from adapters.http.failover import FailedAttempts, start_with_failover
from adapters.http.receipts import receipt_headers
from adapters.services import Services
from application.billing import Attempt, OpenedRequest, Receipt, RequestShape
from application.routing import Route
from domain.errors import InsufficientCredits, InvalidRequest, SecretError, UpstreamError
from domain.spend_caps import SpendCapReached
from domain.usage import Usage

T = TypeVar("T")


@dataclass(frozen=True)
class Call(Generic[T]):
    """An opened request and the upstream attempt serving it."""

    opened: OpenedRequest
    route: Route
    attempts: tuple[Attempt, ...]
    result: T


async def open_request(services: Services, request: Request, api_key: str, shape: RequestShape) -> OpenedRequest:
    return await services.billing.open_request_async(api_key, shape, request.scope["state"]["request_id"])


async def start_call(services: Services, opened: OpenedRequest,
                     operation: Callable[[Any, Route], Awaitable[T]]) -> Call[T]:
    try:
        result, route, attempts = await start_with_failover(services, opened, operation)
    except FailedAttempts as failed:
        status = (failed.error.status if isinstance(failed.error, UpstreamError)
                  else 500 if isinstance(failed.error, SecretError) else 400)
        code = getattr(failed.error, "code", "upstream_error")
        await fail_opened(services, opened, status, code, failed.route, failed.attempts)
        raise failed.error from None
    except BaseException:
        await fail_opened(services, opened, 499, "client_disconnected", None, ())
        raise
    try:
        await services.billing.confirm_hold(opened, route)
    except (InsufficientCredits, SpendCapReached):
        _abandon(result)  # refused after all (recorded): nothing is answered, nothing charged
        raise
    except asyncio.CancelledError:
        _abandon(result)
        await fail_opened(services, opened, 499, "client_disconnected", route, attempts)
        raise
    except BaseException:
        _abandon(result)  # the hold was not saved (the store failed): there is nothing to release
        raise
    return Call(opened, route, attempts, result)


def _abandon(result: object) -> None:
    """Give up an upstream call that will not be answered: close its response if one is open."""
    abort = getattr(result, "abort", None)  # a ChatExchange; a whole answer (bytes) holds nothing open
    if abort is not None:
        abort()


async def complete(services: Services, call: Call[Any], usage: Usage, ttfb_ms: float | None,
                   status: int = 200, error_code: str | None = None) -> Receipt:
    return await services.billing.complete_request_async(
        call.opened, call.route, usage, status=status, ttfb_ms=ttfb_ms, attempts=call.attempts,
        error_code=error_code)


async def fail(services: Services, call: Call[Any], status: int, code: str) -> None:
    await fail_opened(services, call.opened, status, code, call.route, call.attempts)


async def fail_opened(services: Services, opened: OpenedRequest, status: int, code: str, route: Route | None,
                      attempts: tuple[Attempt, ...]) -> None:
    with anyio.CancelScope(shield=True):
        await services.billing.fail_request_async(opened, status=status, error_code=code, route=route,
                                                  attempts=attempts)


async def parsed_document(services: Services, call: Call[bytes]) -> dict[str, Any]:
    """A started call's whole answer as a JSON object; an unreadable one fails the call (no charge)."""
    try:
        document = orjson.loads(call.result)
    except orjson.JSONDecodeError:
        document = None
    if not isinstance(document, dict):
        await fail(services, call, 502, "upstream_bad_response")
        raise UpstreamError("the provider sent an unreadable response", status=502, code="upstream_bad_response")
    return document


def adapter_operation(method: str, missing: str, body: dict[str, Any]) -> Callable[[Any, Route], Awaitable[bytes]]:
    """An attempt that calls ``adapter.<method>(route, body)``; a 400 naming what is
    ``missing`` when the provider's adapter has no such method (e.g. no embeddings)."""

    async def attempt(adapter: Any, route: Route) -> bytes:
        call = getattr(adapter, method, None)
        if call is None:
            raise InvalidRequest(f"provider {route.provider!r} ({route.kind}) {missing}", param="model")
        return await call(route, body)

    return attempt


async def billed_document(services: Services, request: Request, api_key: str, shape: RequestShape,
                          operation: Callable[[Any, Route], Awaitable[bytes]],
                          usage_of: Callable[[dict[str, Any]], Usage]) -> Response:
    """Open, call with failover, charge the usage the whole answer reports, and pass the
    answer on as it came, with the receipt in headers."""
    opened = await open_request(services, request, api_key, shape)
    call = await start_call(services, opened, operation)
    document = await parsed_document(services, call)
    receipt = await complete(services, call, usage_of(document), ttfb_ms=None)
    return Response(call.result, media_type="application/json", headers=receipt_headers(receipt))
