"""Reading a provider's model list (``list_models`` of each adapter; the use case is
application/model_discovery.py): one authenticated GET per page, and one mapping of a
failed listing to the error the operator sees.

Invariants:
- a listing never fails over, retries or touches credential health: it is a read for
  the operator, not traffic;
- failures name the provider and the HTTP status: 401/403 (or what the adapter
  recognises as a refused key) → 502 ``upstream_auth_failed``; 429 → 429
  ``upstream_rate_limited``; 408/504 or no answer in time → 504 ``upstream_timeout``;
  a failed connection → 502 ``upstream_unavailable``; any other status → 502
  ``upstream_error`` with the provider's message; an answer that is not the documented
  list (or one larger than ``MAX_ANSWER_BYTES``) → 502 ``upstream_bad_response``;
- the credential never appears in an error (``redact``), and the provider's own message
  is not passed on for a refused credential (some echo part of the key).
"""

from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from adapters.providers.base import read_answer
from adapters.providers.errors import MAX_MESSAGE_CHARS, redact
from application.routing import Route
from domain.errors import MalformedUpstreamAnswer, UpstreamError

MAX_PAGES = 100  # a paged list longer than this many pages is refused as malformed
PAGE_TIMEOUT_SECONDS = 60.0  # each page, when the provider sets no total timeout

Refused = Callable[[int, bytes], bool]


def listing_timeout(route: Route) -> aiohttp.ClientTimeout:
    """The provider's connect bound; its total bound (or 60 s) for each page."""
    policy = route.policy
    return aiohttp.ClientTimeout(
        total=policy.timeout_total or PAGE_TIMEOUT_SECONDS, sock_connect=policy.timeout_connect
    )


async def get_json(
    session: aiohttp.ClientSession,
    route: Route,
    url: Any,
    *,
    headers: dict[str, str],
    params: dict[str, str] | None = None,
    refused: Refused | None = None,
) -> dict[str, Any]:
    """One page of a model list, as a JSON object; raises the listing's UpstreamError."""
    try:
        async with session.get(url, headers=headers, params=params, timeout=listing_timeout(route)) as response:
            raw = await read_answer(response)
            if response.status >= 300:
                raise listing_error(
                    route,
                    response.status,
                    raw,
                    retry_after=response.headers.get("retry-after"),
                    refused=refused,
                    kind=(response.headers.get("x-amzn-errortype") or "").split(":")[0],
                )
    except MalformedUpstreamAnswer:
        raise bad_listing(route, "an answer too large") from None
    except TimeoutError:
        raise UpstreamError(
            f"provider {route.provider!r} did not answer its model list in time", status=504, code="upstream_timeout"
        ) from None
    except aiohttp.ClientError as exc:
        raise UpstreamError(
            f"provider {route.provider!r} is unreachable ({type(exc).__name__})",
            status=502,
            code="upstream_unavailable",
        ) from None
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_listing(route, "something that is not JSON") from None
    if not isinstance(document, dict):
        raise bad_listing(route, "a model list that is not a JSON object")
    return document


def listing_error(
    route: Route,
    status: int,
    raw: bytes,
    *,
    retry_after: str | None = None,
    refused: Refused | None = None,
    kind: str = "",
) -> UpstreamError:
    """``kind``: the provider's error type when it sends one apart (Bedrock's ``x-amzn-ErrorType``)."""
    provider = repr(route.provider)
    if status in (401, 403) or (refused is not None and refused(status, raw)):
        return UpstreamError(
            f"provider {provider} refused the gateway's credential (HTTP {status}{' ' + kind if kind else ''})",
            status=502,
            code="upstream_auth_failed",
        )
    if status == 429:
        return UpstreamError(
            f"provider {provider} is rate limiting this gateway (HTTP 429)",
            status=429,
            code="upstream_rate_limited",
            retry_after=retry_after or "1",
        )
    if status in (408, 504):
        return UpstreamError(f"provider {provider} timed out (HTTP {status})", status=504, code="upstream_timeout")
    message = redact(error_message(raw), route.secret)
    return UpstreamError(
        f"provider {provider} failed to list its models (HTTP {status}): {message}", status=502, code="upstream_error"
    )


def error_message(raw: bytes) -> str:
    """The message of an error body in any of the providers' shapes: ``{"error": {"message"}}``
    (OpenAI, Anthropic, Gemini), ``{"error": "..."}`` (Ollama), ``{"message"}`` (Bedrock)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        for message in (error.get("message") if isinstance(error, dict) else error, body.get("message")):
            if isinstance(message, str) and message:
                return message[:MAX_MESSAGE_CHARS]
    return raw[:200].decode(errors="replace") or "no details"


def bad_listing(route: Route, what: str) -> UpstreamError:
    return UpstreamError(
        f"provider {route.provider!r} sent {what} instead of its model list", status=502, code="upstream_bad_response"
    )


def token_count(value: Any) -> int | None:
    """A positive whole number of tokens as a provider lists it; None for anything else."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


def items_of(route: Route, document: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The JSON objects in ``document[name]`` (a missing list is an empty page)."""
    items = document.get(name, [])
    if items is None:
        return []
    if not isinstance(items, list):
        raise bad_listing(route, f"a {name!r} that is not a list")
    return [item for item in items if isinstance(item, dict)]


def text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
