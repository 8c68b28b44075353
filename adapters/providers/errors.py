"""One mapping from a provider's failure to what the caller sees, shared by every adapter.

Each adapter parses its own error body into a message (and any special case only it
can recognise); the status decides the rest:
- 404 → 404 ``model_not_found``; other errors in the caller's request (400, 409, 413,
  415, 422) → the same status, with the provider's message;
- 401/403 → 502 ``upstream_auth_failed``: the gateway's credential, never the caller's fault;
- 429 → 429 ``upstream_rate_limited`` with ``Retry-After``;
- 408/504 → 504 ``upstream_timeout``; 503 → 503 ``upstream_unavailable``; 529 (overloaded)
  → 503 ``upstream_overloaded``;
- anything else → 502 ``upstream_error``.
Messages are cut to 500 characters and never contain the credential.
"""

import asyncio
from typing import Any

import aiohttp

from adapters.providers.base import read_answer
from application.routing import Route
from domain.errors import MalformedUpstreamAnswer, UpstreamError

CALLER_ERROR_STATUSES = (400, 404, 409, 413, 415, 422)
MAX_MESSAGE_CHARS = 500
MAX_ERROR_BODY_BYTES = 1024 * 1024  # an error body is read for its message only


def redact(message: str, secret: str | None) -> str:
    """``message`` without the secret, or any ``:``-separated part of it (Bedrock's
    ``ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]``)."""
    if secret:
        for part in sorted({secret, *secret.split(":")}, key=len, reverse=True):
            if len(part) >= 4:
                message = message.replace(part, "[redacted]")
    return message[:MAX_MESSAGE_CHARS]


async def read_error_body(response: aiohttp.ClientResponse) -> bytes:
    """The body of a failed response (empty if it cannot be read, or is larger than
    ``MAX_ERROR_BODY_BYTES``); the connection is released."""
    try:
        return await read_answer(response, MAX_ERROR_BODY_BYTES)
    except (aiohttp.ClientError, TimeoutError, MalformedUpstreamAnswer):
        return b""
    finally:
        response.release()


def error_for_status(
    route: Route, status: int, message: str, *, retry_after: str | None = None, detail: str = ""
) -> UpstreamError:
    provider = repr(route.provider)
    message = redact(message or "no details", route.secret)
    named = f" ({detail})" if detail else ""
    if status == 404:
        return UpstreamError(
            f"provider {provider} does not know this model: {message}", status=404, code="model_not_found"
        )
    if status in CALLER_ERROR_STATUSES:
        return UpstreamError(
            f"provider {provider} rejected the request: {message}", status=status, code="upstream_rejected_request"
        )
    if status in (401, 403):
        return UpstreamError(
            f"provider {provider} refused the gateway's credential{named}", status=502, code="upstream_auth_failed"
        )
    if status == 429:
        return UpstreamError(
            f"provider {provider} is rate limiting this gateway{named}",
            status=429,
            code="upstream_rate_limited",
            retry_after=retry_after or "1",
        )
    if status in (408, 504):
        return UpstreamError(f"provider {provider} timed out{named}", status=504, code="upstream_timeout")
    if status == 503:
        return UpstreamError(
            f"provider {provider} is unavailable{named}",
            status=503,
            code="upstream_unavailable",
            retry_after=retry_after,
        )
    if status == 529:
        return UpstreamError(
            f"provider {provider} is overloaded{named}", status=503, code="upstream_overloaded", retry_after=retry_after
        )
    return UpstreamError(f"provider {provider} failed with status {status}{named}", status=502, code="upstream_error")


def timed_out(route: Route) -> UpstreamError:
    return UpstreamError(f"provider {route.provider!r} timed out", status=504, code="upstream_timeout")


def unreachable(route: Route, exc: BaseException) -> UpstreamError:
    return UpstreamError(
        f"provider {route.provider!r} is unreachable ({type(exc).__name__})", status=502, code="upstream_unavailable"
    )


async def post(
    session: aiohttp.ClientSession,
    route: Route,
    url: Any,
    *,
    data: bytes,
    headers: dict[str, str],
    timeout: aiohttp.ClientTimeout,
) -> aiohttp.ClientResponse:
    """POST to a provider; a timeout or a failed connection becomes the caller's 504 / 502.
    The response's headers must arrive within the route's first-byte timeout, when it sets one."""
    first_byte = route.policy.timeout_first_byte
    try:
        if first_byte is None:
            return await session.post(url, data=data, headers=headers, timeout=timeout)
        async with asyncio.timeout(first_byte):
            return await session.post(url, data=data, headers=headers, timeout=timeout)
    except TimeoutError:
        raise timed_out(route) from None
    except aiohttp.ClientError as exc:
        raise unreachable(route, exc) from None


PROBE_TIMEOUT_SECONDS = 10


async def probe_with_get(session: aiohttp.ClientSession, url: Any, headers: dict[str, str]) -> bool | None:
    """A credential probe by a GET that costs no tokens: 401/403 → refused (False), 2xx →
    accepted (True), anything else or no answer → could not tell (None)."""
    try:
        async with session.get(
            url, headers=headers, timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_SECONDS)
        ) as response:
            if response.status in (401, 403):
                return False
            return True if response.status < 300 else None
    except (aiohttp.ClientError, TimeoutError):
        return None
