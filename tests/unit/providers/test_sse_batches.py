"""SSE parsing by socket read: events split anywhere across reads come out whole, in order,
grouped by the read that completed them."""

import asyncio

import pytest

from adapters.providers.openai_compatible import sse_event_batches, sse_events

STREAM = (
    b'data: {"a":1}\r\n\r\ndata: {"b":2}\n\n: a comment\nevent: x\ndata: line one\ndata: line two\n\ndata: [DONE]\n\n'
)


class FakeContent:
    """A body whose reads return these blocks, then the end (b"")."""

    def __init__(self, reads: list[bytes]) -> None:
        self.reads = list(reads)

    async def readany(self) -> bytes:
        return self.reads.pop(0) if self.reads else b""


class FakeResponse:
    def __init__(self, reads: list[bytes]) -> None:
        self.content = FakeContent(reads)


def batches(reads: list[bytes]) -> list[list[bytes]]:
    async def collect() -> list[list[bytes]]:
        return [batch async for batch in sse_event_batches(FakeResponse(reads))]  # type: ignore[arg-type]

    return asyncio.run(collect())


EVENTS = [b'{"a":1}', b'{"b":2}', b"line one\nline two", b"[DONE]"]


def test_one_read_gives_one_batch_of_every_event() -> None:
    assert batches([STREAM]) == [EVENTS]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 16])
def test_events_split_anywhere_come_out_whole_and_in_order(size: int) -> None:
    reads = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    found = batches(reads)
    assert [event for batch in found for event in batch] == EVENTS
    assert all(batch for batch in found)  # no empty batches


def test_a_burst_of_plain_events_is_one_batch_with_every_payload_as_sent() -> None:
    burst = b'data: {"a":1}\n\ndata: \n\ndata: {"b":"data:  x"}\n\ndata: [DONE]\n\n'
    assert batches([burst]) == [[b'{"a":1}', b"", b'{"b":"data:  x"}', b"[DONE]"]]


@pytest.mark.parametrize(
    ("odd", "payloads"),
    [
        (b"data:  {}\n\n", [b"{}"]),  # every leading space stripped
        (b"data: {}\r\n\r\n", [b"{}"]),
        (b"data: a\ndata: b\n\n", [b"a\nb"]),
        (b"event: x\ndata: {}\n\n", [b"{}"]),
        (b": ping\n\n", []),
    ],
)
def test_a_read_with_any_other_event_is_read_line_by_line(odd: bytes, payloads: list[bytes]) -> None:
    assert batches([b"data: 1\n\n" + odd + b"data: 2\n\n"]) == [[b"1", *payloads, b"2"]]


def test_a_last_event_without_its_blank_line_is_not_lost() -> None:
    assert batches([b'data: {"a":1}\n\ndata: {"z":9}']) == [[b'{"a":1}'], [b'{"z":9}']]


def test_sse_events_yields_the_same_events_one_by_one() -> None:
    async def collect() -> list[bytes]:
        return [event async for event in sse_events(FakeResponse([STREAM[:10], STREAM[10:]]))]  # type: ignore[arg-type]

    assert asyncio.run(collect()) == EVENTS
