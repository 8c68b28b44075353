"""``EventStreamResponse``: a server-sent-event answer relayed in the request's own task.

Starlette's ``StreamingResponse`` (for servers below ASGI 2.4, as uvicorn is) runs the body in
a second task under an anyio task group and listens for ``http.disconnect`` in the first,
cancelling the group's scope when either ends: about a tenth of the event loop's samples of a
streamed request (issue 21, docs/performance.md "Issue 21: the stream path"). Here the body
is iterated by the request's task itself, and the caller is watched by one task awaiting the
server's ``receive`` (adapters/http/disconnect.py ``CallerWatch``): a caller gone cancels the
request's task, once, wherever the body waits, and the body (the relay) charges what was
produced (application/streams.py); that cancellation is taken back here and the answer ends
quietly, as Starlette's did. Any other cancellation (a graceful shutdown's cut,
adapters/http/drain.py) goes on up untouched.

Invariants: every piece is one ASGI send (one write); a ``LastPiece`` ends the body with it, so
the closing frames and the end of the chunked body leave in one write; the watch stops
before the answer's last send and never outlives the response.
"""

from collections.abc import AsyncGenerator, AsyncIterator, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from adapters.http.disconnect import CallerGone, CallerWatch


class LastPiece(bytes):
    """The body's last piece: sent with the end of the body (the iterator is not read further)."""

    __slots__ = ()


class EventStreamResponse(Response):
    media_type = "text/event-stream"

    def __init__(self, body: AsyncIterator[bytes], headers: Mapping[str, str] | None = None) -> None:
        self.body_iterator = body
        self.status_code = 200
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        last = b""
        try:
            with CallerWatch(receive):
                async for piece in self.body_iterator:
                    if type(piece) is LastPiece:
                        last = piece
                        break
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
        except CallerGone:
            return  # the body charged what was produced; nobody reads the rest
        finally:
            if isinstance(self.body_iterator, AsyncGenerator):
                await self.body_iterator.aclose()  # left at its last piece: finished now, not by the collector
        await send({"type": "http.response.body", "body": last, "more_body": False})
