"""The port every provider adapter implements. Whatever the provider's wire format,
an adapter speaks OpenAI's chat format to the gateway: a plain answer is one
``chat.completion`` JSON document, a stream is a sequence of ``chat.completion.chunk``
JSON payloads — the last carrying ``usage`` when the provider reported it — ended by
``[DONE]``. So billing and relaying are written once, in adapters/http/chat.py. The port itself
(``ChatProvider``, ``ChatExchange``, ``ProviderAdapter``) is declared in application/ports.py.

``start_chat`` raises ``UpstreamError`` (with the status the caller should see) for
every failure that happens before the first byte; later failures surface while reading,
as one of ``READ_FAILURES``: a network error, a timeout, or ``MalformedUpstreamAnswer``,
which an adapter raises explicitly where it finds the provider's answer unreadable (bad
JSON, a missing or mistyped field, broken framing, an error inside a stream, a stream
ended early). Nothing else is the provider's fault: a KeyError, TypeError or plain
ValueError while reading is a bug of ours and propagates — never billed, never counted
against a credential's health, never failed over.

Each call is bounded by its provider's timeouts (domain/provider.py ``UpstreamPolicy``,
carried by the route): ``UpstreamTimeouts.for_route`` gives aiohttp's connect and total
bounds (the total covers the whole exchange, a stream's body included, and defaults to the
gateway's ``TALLYHUB_UPSTREAM_TIMEOUT_SECONDS``); adapters/providers/errors.py ``post``
applies the first-byte bound (until the response's headers have arrived).
"""

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from application.ports import ChatExchange, ChatProvider, ProviderAdapter
from application.routing import Route
from domain.errors import InvalidRequest, MalformedUpstreamAnswer
from domain.provider import UpstreamPolicy

__all__ = [
    "DONE",
    "MAX_ANSWER_BYTES",
    "MAX_EVENT_BYTES",
    "READ_FAILURES",
    "ChatExchange",
    "ChatProvider",
    "MalformedUpstreamAnswer",
    "ProviderAdapter",
    "ProviderBase",
    "ResponseExchange",
    "UpstreamTimeouts",
    "arrived_blocks",
    "read_answer",
    "upstream_json",
    "upstream_object",
    "unsupported",
]

DONE = b"[DONE]"
# The largest whole answer read from a provider (a chat answer, an embeddings or images
# document): far above any sane answer (an embeddings batch of 2,048 × 3,072 floats is about
# 130 MB as JSON text, so batches that size need base64), small enough that a provider
# sending a gigabyte cannot exhaust the gateway's memory. A larger answer is unreadable.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
# The largest single stream event (one SSE ``data`` payload, one line): above it, garbage.
MAX_EVENT_BYTES = 16 * 1024 * 1024
# What reading an exchange may raise when the provider breaks off or sends garbage; and only that.
READ_FAILURES: tuple[type[BaseException], ...] = (aiohttp.ClientError, TimeoutError, MalformedUpstreamAnswer)


def upstream_json(data: bytes) -> Any:
    """JSON the provider sent, parsed; ``MalformedUpstreamAnswer`` if it is not JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise MalformedUpstreamAnswer("the provider sent something that is not JSON") from None


def upstream_object(value: Any, what: str) -> dict[str, Any]:
    """``value`` if it is a JSON object; ``MalformedUpstreamAnswer`` naming ``what`` if not."""
    if not isinstance(value, dict):
        raise MalformedUpstreamAnswer(f"the provider sent {what} that is not a JSON object")
    return value


async def arrived_blocks(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """A response body block by block as it arrived (``iter_any``), except that when the
    connection breaks, what arrived before the break is still handed over before the error.

    aiohttp raises a break on the next read even while it holds bytes received before it, so
    a reader that starts a few milliseconds late — a relay waiting for its hold to be saved —
    would lose a stream the provider broke off meanwhile, and with it what the client should
    get and be charged for. (``_buffer`` and ``_read_nowait`` are aiohttp's own, 3.14.)"""
    while True:
        try:
            block = await content.readany()
        except aiohttp.ClientPayloadError:
            if content._buffer:
                yield content._read_nowait(-1)
            raise
        if not block:
            return
        yield block


async def read_answer(response: aiohttp.ClientResponse, limit: int = MAX_ANSWER_BYTES) -> bytes:
    """A whole response body, at most ``limit`` bytes (decompressed): a larger one is
    ``MalformedUpstreamAnswer``, refused from its Content-Length before reading when it
    announces one, else as soon as what arrived passes the limit — never held whole."""
    if response.content_length is not None and response.content_length > limit:
        raise MalformedUpstreamAnswer(f"the provider's answer is larger than {limit} bytes")
    blocks: list[bytes] = []
    size = 0
    while block := await response.content.readany():
        size += len(block)
        if size > limit:
            raise MalformedUpstreamAnswer(f"the provider's answer is larger than {limit} bytes")
        blocks.append(block)
    return b"".join(blocks)


class UpstreamTimeouts:
    """aiohttp's timeouts for each provider policy, built once per distinct policy."""

    def __init__(self, default_total_seconds: float) -> None:
        self.default_total_seconds = default_total_seconds  # for a provider that sets no total
        self._built: dict[UpstreamPolicy, aiohttp.ClientTimeout] = {}

    def for_route(self, route: Route) -> aiohttp.ClientTimeout:
        policy = route.policy
        timeout = self._built.get(policy)
        if timeout is None:
            timeout = self._built[policy] = aiohttp.ClientTimeout(
                total=policy.timeout_total or self.default_total_seconds, sock_connect=policy.timeout_connect
            )
        return timeout


class ProviderBase:
    """What an adapter answers for a capability its provider lacks (``ProviderAdapter`` in
    application/ports.py): a 400 naming the provider, and no probe (None: cannot tell)."""

    async def embed(self, route: Route, body: dict[str, Any]) -> bytes:
        raise unsupported(route, "does not offer embeddings")

    async def generate_images(self, route: Route, body: dict[str, Any]) -> bytes:
        raise unsupported(route, "does not generate images")

    async def probe(self, route: Route) -> bool | None:
        return None


def unsupported(route: Route, missing: str) -> InvalidRequest:
    return InvalidRequest(f"provider {route.provider!r} ({route.kind}) {missing}", param="model")


class ResponseExchange:
    """An exchange over one open HTTP response: aborting closes it, releasing returns it."""

    response: aiohttp.ClientResponse

    def stream_data(self) -> AsyncIterator[bytes]:
        raise NotImplementedError

    async def stream_batches(self) -> AsyncIterator[list[bytes]]:
        """One payload a batch: an exchange that can tell what arrived together overrides this."""
        async for data in self.stream_data():
            yield [data]

    def abort(self) -> None:
        self.response.close()

    def release(self) -> None:
        self.response.release()
