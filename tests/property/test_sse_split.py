"""Any server-sent-event stream, cut into reads anywhere, gives the same payloads through
``sse_event_batches`` (adapters/providers/openai_compatible.py: whole events at once where a
read allows, else line by line) as a reading of it line by line, the way SSE defines it, and
in the same batches: each read's batch holds the events whose blank line that read brought."""

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.providers.openai_compatible import sse_event_batches

value = st.sampled_from([b"{}", b'{"a":1}', b"[DONE]", b"", b" x", b"data: y", b":", b"a\\n"])
line = st.one_of(
    st.builds(lambda v: b"data: " + v, value),
    st.builds(lambda v: b"data:" + v, value),
    st.just(b": a comment"),
    st.just(b"event: delta"),
    st.just(b"id: 7"),
)
event = st.lists(line, min_size=1, max_size=3)


def by_lines(stream: bytes) -> list[bytes]:
    """The payloads of ``stream`` read line by line (LF or CRLF), the last event's too."""
    payloads: list[bytes] = []
    data: list[bytes] = []
    for raw in stream.split(b"\n"):
        text = raw.rstrip(b"\r")
        if not text:
            if data:
                payloads.append(b"\n".join(data))
                data = []
        elif text.startswith(b"data:"):
            data.append(text[5:].lstrip(b" "))
    if data:
        payloads.append(b"\n".join(data))
    return payloads


def completed(stream: bytes) -> list[bytes]:
    """The payloads of the events of ``stream`` whose blank line has arrived (whole lines only)."""
    payloads: list[bytes] = []
    data: list[bytes] = []
    for raw in stream.split(b"\n")[:-1]:
        text = raw.rstrip(b"\r")
        if not text:
            if data:
                payloads.append(b"\n".join(data))
                data = []
        elif text.startswith(b"data:"):
            data.append(text[5:].lstrip(b" "))
    return payloads


def batches_by_lines(reads: list[bytes]) -> list[list[bytes]]:
    """Per read, the events it completed (none: no batch); then the last event left open."""
    batches: list[list[bytes]] = []
    stream = b""
    for read in reads:
        seen = len(completed(stream))
        stream += read
        if new := completed(stream)[seen:]:
            batches.append(new)
    if rest := by_lines(stream)[len(completed(stream)) :]:
        batches.append(rest)
    return batches


class Content:
    def __init__(self, reads: list[bytes]) -> None:
        self.reads = reads

    async def readany(self) -> bytes:
        return self.reads.pop(0) if self.reads else b""


class Response:
    def __init__(self, reads: list[bytes]) -> None:
        self.content = Content(reads)


@settings(max_examples=500, deadline=None)
@given(
    events=st.lists(st.tuples(event, st.sampled_from([b"\n", b"\r\n"]), st.integers(1, 3)), max_size=6),
    ended=st.booleans(),
    cuts=st.lists(st.integers(0, 400), max_size=8),
)
def test_events_cut_anywhere_come_out_as_read_line_by_line(
    events: list[tuple[list[bytes], bytes, int]], ended: bool, cuts: list[int]
) -> None:
    stream = b"".join(eol.join(lines) + eol * (1 + blanks) for lines, eol, blanks in events)
    if not ended:
        stream = stream.rstrip(b"\r\n")  # the last event without its blank line
    points = sorted({0, len(stream), *(cut for cut in cuts if cut < len(stream))})
    reads = [stream[a:b] for a, b in zip(points, points[1:], strict=False)]

    async def read() -> list[bytes]:
        return [payload async for batch in sse_event_batches(Response(reads)) for payload in batch]  # type: ignore[arg-type]

    assert asyncio.run(read()) == by_lines(stream)


# Mostly what providers send (one ``data: `` line an event, LF), with the odd other event.
plain_event = st.one_of(
    st.builds(lambda v: ([b"data: " + v], b"\n", 1), value),
    st.builds(lambda v: ([b"data: " + v], b"\n", 1), st.binary(max_size=12)),
    st.tuples(event, st.sampled_from([b"\n", b"\r\n"]), st.integers(1, 2)),
)


@settings(max_examples=500, deadline=None)
@given(
    events=st.lists(plain_event, max_size=8),
    ended=st.booleans(),
    at_events=st.lists(st.integers(0, 8), max_size=4),
    anywhere=st.lists(st.integers(0, 400), max_size=2),
)
def test_reads_cut_between_events_come_out_in_the_batches_of_a_reading_line_by_line(
    events: list[tuple[list[bytes], bytes, int]], ended: bool, at_events: list[int], anywhere: list[int]
) -> None:
    frames = [eol.join(lines) + eol * (1 + blanks) for lines, eol, blanks in events]
    stream = b"".join(frames)
    if not ended:
        stream = stream.rstrip(b"\r\n")
    bounds = [sum(map(len, frames[:count])) for count in at_events if count <= len(frames)]
    points = sorted({0, len(stream), *(cut for cut in [*bounds, *anywhere] if cut < len(stream))})
    reads = [stream[a:b] for a, b in zip(points, points[1:], strict=False)]

    async def read() -> list[list[bytes]]:
        return [batch async for batch in sse_event_batches(Response(list(reads)))]  # type: ignore[arg-type]

    assert asyncio.run(read()) == batches_by_lines(reads)
