"""A provider that sends part of a stream and drops the connection before the gateway reads
it: the part that arrived is still read (then the break), where aiohttp's own ``iter_any``
raises the break at once and the part is lost."""

import asyncio

import aiohttp
from aiohttp import web

from adapters.providers.base import arrived_blocks

PART = b'data: {"n": 1}\n\ndata: {"n": 2}\n\n'


async def read_late(reader: str) -> tuple[bytes, BaseException | None]:
    async def broken(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(PART)
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.close()  # no final chunk: the body is broken off
        return response

    app = web.Application()
    app.router.add_get("/stream", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    received, error = b"", None
    try:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/stream") as response:
            await asyncio.sleep(0.3)  # the part and the break have both arrived, unread
            blocks = arrived_blocks(response.content) if reader == "arrived" else response.content.iter_any()
            try:
                async for block in blocks:
                    received += block
            except aiohttp.ClientPayloadError as exc:
                error = exc
    finally:
        await runner.cleanup()
    return received, error


def test_what_arrived_before_a_break_is_read_before_the_break() -> None:
    received, error = asyncio.run(read_late("arrived"))
    assert received == PART
    assert isinstance(error, aiohttp.ClientPayloadError)


def test_aiohttp_alone_loses_it() -> None:
    """Why ``arrived_blocks`` exists: should this fail, aiohttp no longer drops the part."""
    received, error = asyncio.run(read_late("iter_any"))
    assert received == b"" and isinstance(error, aiohttp.ClientPayloadError)
