"""What a provider sends is never held without bound (issue 20, item 1): a whole answer past
``MAX_ANSWER_BYTES`` (announced or not) and a stream line or event past ``MAX_EVENT_BYTES``
are the provider's garbled answer, refused once the bound is passed — read no further."""

import asyncio

import pytest

from adapters.providers.base import MAX_ANSWER_BYTES, MAX_EVENT_BYTES, MalformedUpstreamAnswer, read_answer
from adapters.providers.errors import MAX_ERROR_BODY_BYTES, read_error_body
from adapters.providers.openai_compatible import sse_event_batches

BLOCK = 1024 * 1024


class EndlessContent:
    """A body that never ends: the same block on every read, counted."""

    def __init__(self, block: bytes) -> None:
        self.block = block
        self.reads = 0

    async def readany(self) -> bytes:
        self.reads += 1
        return self.block


class FiniteContent:
    def __init__(self, reads: list[bytes]) -> None:
        self.reads = list(reads)

    async def readany(self) -> bytes:
        return self.reads.pop(0) if self.reads else b""


class FakeResponse:
    def __init__(self, content: object, content_length: int | None = None) -> None:
        self.content = content
        self.content_length = content_length
        self.released = False

    def release(self) -> None:
        self.released = True


def test_an_answer_announcing_more_than_the_bound_is_refused_before_a_byte_is_read() -> None:
    content = EndlessContent(b"x" * BLOCK)
    with pytest.raises(MalformedUpstreamAnswer, match="larger than"):
        asyncio.run(read_answer(FakeResponse(content, MAX_ANSWER_BYTES + 1)))  # type: ignore[arg-type]
    assert content.reads == 0


def test_an_answer_without_a_length_is_refused_as_soon_as_it_passes_the_bound() -> None:
    content = EndlessContent(b"x" * BLOCK)
    with pytest.raises(MalformedUpstreamAnswer, match="larger than"):
        asyncio.run(read_answer(FakeResponse(content)))  # type: ignore[arg-type]
    assert content.reads == MAX_ANSWER_BYTES // BLOCK + 1


def test_an_answer_within_the_bound_is_read_whole() -> None:
    response = FakeResponse(FiniteContent([b'{"a":', b"1}"]), 7)
    assert asyncio.run(read_answer(response)) == b'{"a":1}'  # type: ignore[arg-type]


def test_an_oversized_error_body_is_read_as_no_details_and_released() -> None:
    response = FakeResponse(EndlessContent(b"e" * BLOCK))
    assert asyncio.run(read_error_body(response)) == b""  # type: ignore[arg-type]
    assert response.released and response.content.reads == MAX_ERROR_BODY_BYTES // BLOCK + 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "block",
    [b"x" * BLOCK, b"data: " + b"x" * (BLOCK - 7) + b"\n"],
    ids=["a-line-without-end", "an-event-of-endless-data-lines"],
)
def test_a_stream_event_past_the_bound_is_garbled_and_read_no_further(block: bytes) -> None:
    content = EndlessContent(block)

    async def drain() -> None:
        async for _ in sse_event_batches(FakeResponse(content)):  # type: ignore[arg-type]
            pass

    first = block if block.startswith(b"data: ") else b"data: " + block
    content.block = first
    with pytest.raises(MalformedUpstreamAnswer, match="stream event larger than"):
        asyncio.run(drain())
    assert content.reads <= MAX_EVENT_BYTES // BLOCK + 2
