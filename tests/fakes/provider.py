"""A fake of the provider port (application/ports.py ``ProviderAdapter``): no server, no
HTTP. Each ``start_chat`` takes the next scripted outcome (an error to raise, or None to
serve) and remembers the route it was given; ``gate`` holds every start until it is set.
The exchanges it serves stream ``stream`` (a ``StreamScript``: batches of payloads, then
``DONE``, an error, or a wait that never ends) and answer ``completion`` (a document, or an
error to raise) when read whole."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from adapters.providers.base import DONE, ProviderBase
from application.routing import Route

COMPLETION = orjson.dumps(
    {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }
)


@dataclass(frozen=True)
class StreamScript:
    """What a fake exchange streams: ``batches`` of chunk payloads, then ``DONE`` (``ending``
    None), raises ``ending`` (an exception: the provider broke the stream), or, with
    ``hang``, waits forever (for a caller that goes away)."""

    batches: tuple[tuple[bytes, ...], ...] = ()
    ending: BaseException | None = None
    hang: bool = False
    # set when the reader comes back for more after a batch (it has taken that batch)
    started: asyncio.Event = field(default_factory=asyncio.Event, compare=False)


class FakeExchange:
    def __init__(self, script: StreamScript | None = None, completion: bytes | Exception = COMPLETION) -> None:
        self.script = script or StreamScript()
        self.completion = completion
        self.aborted = False
        self.released = False

    async def read_completion(self) -> bytes:
        if isinstance(self.completion, Exception):
            raise self.completion
        return self.completion

    async def stream_data(self) -> AsyncIterator[bytes]:
        async for batch in self.stream_batches():
            for data in batch:
                yield data

    async def stream_batches(self) -> AsyncIterator[list[bytes]]:
        script = self.script
        for batch in script.batches:
            yield list(batch)
            script.started.set()
        if script.hang:
            await asyncio.Event().wait()
        if script.ending is not None:
            raise script.ending
        yield [DONE]

    def abort(self) -> None:
        self.aborted = True

    def release(self) -> None:
        self.released = True


class FakeProvider(ProviderBase):
    """Chat through a script; no embeddings, no images, no probe (ProviderBase's answers)."""

    def __init__(
        self,
        *outcomes: Exception | None,
        stream: StreamScript | None = None,
        completion: bytes | Exception = COMPLETION,
    ) -> None:
        self.outcomes = list(outcomes)
        self.stream = stream
        self.completion = completion
        self.routes: list[Route] = []
        self.exchanges: list[FakeExchange] = []
        self.gate: asyncio.Event | None = None

    async def start_chat(self, route: Route, body: dict[str, Any]) -> FakeExchange:
        self.routes.append(route)
        if self.gate is not None:
            await self.gate.wait()
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome
        exchange = FakeExchange(self.stream, self.completion)
        self.exchanges.append(exchange)
        return exchange

    @property
    def secrets_seen(self) -> list[str | None]:
        return [route.secret for route in self.routes]
