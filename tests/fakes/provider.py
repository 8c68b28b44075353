"""A fake of the provider port (application/ports.py ``ProviderAdapter``): no server, no
HTTP. Each ``start_chat`` takes the next scripted outcome (an error to raise, or None to
serve) and remembers the route it was given; ``gate`` holds every start until it is set."""

import asyncio
from collections.abc import AsyncIterator
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


class FakeExchange:
    def __init__(self) -> None:
        self.aborted = False
        self.released = False

    async def read_completion(self) -> bytes:
        return COMPLETION

    async def stream_data(self) -> AsyncIterator[bytes]:
        yield DONE

    async def stream_batches(self) -> AsyncIterator[list[bytes]]:
        yield [DONE]

    def abort(self) -> None:
        self.aborted = True

    def release(self) -> None:
        self.released = True


class FakeProvider(ProviderBase):
    """Chat through a script; no embeddings, no images, no probe (ProviderBase's answers)."""

    def __init__(self, *outcomes: Exception | None) -> None:
        self.outcomes = list(outcomes)
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
        exchange = FakeExchange()
        self.exchanges.append(exchange)
        return exchange

    @property
    def secrets_seen(self) -> list[str | None]:
        return [route.secret for route in self.routes]
