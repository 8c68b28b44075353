"""The OpenAI wire format, for kind ``openai`` and ``openai-compatible`` providers.

Requests go upstream as the caller sent them (unknown fields included) with only the
model name replaced; responses come back as raw bytes. Upstream failures become
``UpstreamError`` with the status the caller should see; the upstream's own message
is passed on only for errors in the caller's request, and never contains the
credential.
"""

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from adapters.providers.base import (
    MAX_EVENT_BYTES,
    MalformedUpstreamAnswer,
    ProviderBase,
    ResponseExchange,
    UpstreamTimeouts,
    arrived_blocks,
    read_answer,
)
from adapters.providers.errors import error_for_status, post, probe_with_get, read_error_body
from adapters.providers.fidelity import without_anthropic_conventions
from adapters.providers.openai_models import list_openai_models
from application.billing import Route
from application.model_discovery import ProviderModel
from domain.errors import InvalidRequest, UpstreamError

DEFAULT_BASE_URLS = {"openai": "https://api.openai.com/v1"}
SUPPORTED_KINDS = ("openai", "openai-compatible")


def base_url_for(kind: str, base_url: str | None) -> str:
    url = base_url or DEFAULT_BASE_URLS.get(kind)
    if not url:
        raise InvalidRequest(f"a provider of kind {kind!r} needs --base-url", param="base_url")
    return url.rstrip("/")


class OpenAICompatibleProvider(ProviderBase):
    def __init__(self, session: aiohttp.ClientSession, *, timeout_seconds: float) -> None:
        self.session = session
        self.timeouts = UpstreamTimeouts(timeout_seconds)  # per provider: the route carries its policy

    async def start_chat(self, route: Route, body: dict[str, Any]) -> "OpenAIExchange":
        """Send the request; return the open 2xx exchange or raise UpstreamError. OpenAI's own
        API gets no Anthropic cache marks or thinking blocks (adapters/providers/fidelity.py);
        other base URLs (OpenRouter, LiteLLM, …) get them as sent."""
        if route.kind == "openai":
            body = without_anthropic_conventions(body)
        return OpenAIExchange(await self._post(route, "/chat/completions", body))

    async def embed(self, route: Route, body: dict[str, Any]) -> bytes:
        """``POST /embeddings``; the answer is already OpenAI's embeddings document."""
        return await _read_all(await self._post(route, "/embeddings", body))

    async def generate_images(self, route: Route, body: dict[str, Any]) -> bytes:
        """``POST /images/generations``; the answer is already OpenAI's images document."""
        return await _read_all(await self._post(route, "/images/generations", body))

    async def _post(self, route: Route, path: str, body: dict[str, Any]) -> aiohttp.ClientResponse:
        url = base_url_for(route.kind, route.base_url) + path
        headers = {"content-type": "application/json"}
        if route.secret:
            headers["authorization"] = f"Bearer {route.secret}"
        payload = orjson.dumps({**body, "model": route.upstream_model})
        response = await post(
            self.session, route, url, data=payload, headers=headers, timeout=self.timeouts.for_route(route)
        )
        if response.status >= 300:
            raise await upstream_error(route, response)
        return response

    async def probe(self, route: Route) -> bool | None:
        """Is the credential accepted? ``GET /models`` costs no tokens. None: could not tell."""
        url = base_url_for(route.kind, route.base_url) + "/models"
        headers = {"authorization": f"Bearer {route.secret}"} if route.secret else {}
        return await probe_with_get(self.session, url, headers)

    async def list_models(self, route: Route) -> list[ProviderModel]:
        """``GET /models`` (adapters/providers/openai_models.py)."""
        return await list_openai_models(self.session, route, base_url_for(route.kind, route.base_url))


class OpenAIExchange(ResponseExchange):
    """The provider already speaks OpenAI: bytes pass through untouched."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def read_completion(self) -> bytes:
        return await read_answer(self.response)

    def stream_data(self) -> AsyncIterator[bytes]:
        return sse_events(self.response)

    def stream_batches(self) -> AsyncIterator[list[bytes]]:
        """``stream_data`` grouped as it arrived (the relay writes each group at once)."""
        return sse_event_batches(self.response)


async def _read_all(response: aiohttp.ClientResponse) -> bytes:
    """A whole 2xx body; a provider that breaks off here failed before the caller saw a byte."""
    try:
        return await read_answer(response)
    except (aiohttp.ClientError, TimeoutError):
        raise UpstreamError("the provider broke off its answer", status=502, code="upstream_bad_response") from None
    finally:
        response.release()


async def upstream_error(route: Route, response: aiohttp.ClientResponse) -> UpstreamError:
    """An OpenAI-shaped error response → the error the caller sees (adapters/providers/errors.py)."""
    raw = await read_error_body(response)
    return error_for_status(route, response.status, _message_of(raw), retry_after=response.headers.get("retry-after"))


def _message_of(raw: bytes) -> str:
    try:
        return str(orjson.loads(raw)["error"]["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return raw[:200].decode(errors="replace")


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The ``data`` payloads of a server-sent-event stream, one per event."""
    async for batch in sse_event_batches(response):
        for data in batch:
            yield data


async def sse_event_batches(response: aiohttp.ClientResponse) -> AsyncIterator[list[bytes]]:
    """The same payloads grouped as they arrived: every event completed by one read of the
    connection comes in one list, so a burst can be passed on in one write. A line or an
    event longer than ``MAX_EVENT_BYTES`` is ``MalformedUpstreamAnswer``: what a provider
    sends without a line break is never buffered without bound.

    A read that starts at an event's start and holds only whole one-line events is split
    whole (``whole_events``); any other is read line by line, carrying what it leaves open
    to the next read. Both give the payloads SSE defines (tests/property/test_sse_split.py)."""
    data: list[bytes] = []
    pending = b""
    async for block in arrived_blocks(response.content):
        if not pending and not data and (whole := whole_events(block)) is not None:
            yield whole
            continue
        *lines, pending = (pending + block).split(b"\n")
        if len(pending) > MAX_EVENT_BYTES or sum(map(len, data)) > MAX_EVENT_BYTES:
            raise MalformedUpstreamAnswer(f"the provider sent a stream event larger than {MAX_EVENT_BYTES} bytes")
        events = []
        for line in lines:
            line = line.rstrip(b"\r")
            if not line:
                if data:
                    events.append(b"\n".join(data))
                    data = []
            elif line.startswith(b"data:"):
                data.append(line[5:].lstrip(b" "))
        if events:
            yield events
    last = pending.rstrip(b"\r")
    if last.startswith(b"data:"):
        data.append(last[5:].lstrip(b" "))
    if data:
        yield [b"\n".join(data)]


FIRST_DATA = b"data: "
NEXT_DATA = b"\n\ndata: "


def whole_events(block: bytes) -> list[bytes] | None:
    """The payloads of ``block`` when it is whole events of one ``data: `` line each, LF-ended
    (``data: P\n\n`` and so on: how OpenAI and most providers write a stream), else None.

    Split at the blank lines at once instead of line by line (issue 21: a burst of 22 events
    read in one go: about 40 % of the line reading's instructions). The checks are scans in C: with no CR or LF left in
    the payloads, each was one line and the block held nothing else; a payload opening with a
    space (the line reading strips every leading space), a control byte or nothing at all
    sorts below ``!`` and leaves the block to the line reading."""
    if not block.startswith(FIRST_DATA) or not block.endswith(b"\n\n"):
        return None
    payloads = block[len(FIRST_DATA) : -2].split(NEXT_DATA)
    joined = b"".join(payloads)
    if b"\n" in joined or b"\r" in joined or min(payloads) < b"!":
        return None
    return payloads
