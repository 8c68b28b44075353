"""The port every provider adapter implements. Whatever the provider's wire format,
an adapter speaks OpenAI's chat format to the gateway: a plain answer is one
``chat.completion`` JSON document, a stream is a sequence of ``chat.completion.chunk``
JSON payloads — the last carrying ``usage`` when the provider reported it — ended by
``[DONE]``. So billing and relaying are written once, in adapters/http/chat.py.

``start_chat`` raises ``UpstreamError`` (with the status the caller should see) for
every failure that happens before the first byte; later failures surface while reading.
"""

from collections.abc import AsyncIterator
from typing import Any, Protocol

import aiohttp

from application.billing import Route

DONE = b"[DONE]"
# What reading an exchange may raise when the provider breaks off or sends garbage.
READ_FAILURES: tuple[type[BaseException], ...] = (aiohttp.ClientError, TimeoutError, ValueError)


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


class ChatExchange(Protocol):
    """One upstream call in flight."""

    async def read_completion(self) -> bytes:
        """The whole answer as an OpenAI ``chat.completion`` JSON document."""
        ...

    def stream_data(self) -> AsyncIterator[bytes]:
        """OpenAI ``chat.completion.chunk`` payloads, then ``DONE`` if the provider finished."""
        ...

    def abort(self) -> None:
        """Cancel the upstream call (the caller went away)."""
        ...

    def release(self) -> None:
        """Return the connection; safe to call more than once."""
        ...


class ResponseExchange:
    """An exchange over one open HTTP response: aborting closes it, releasing returns it."""

    response: aiohttp.ClientResponse

    def abort(self) -> None:
        self.response.close()

    def release(self) -> None:
        self.response.release()


class ChatProvider(Protocol):
    async def start_chat(self, route: Route, body: dict[str, Any]) -> ChatExchange: ...
