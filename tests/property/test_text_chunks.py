"""A stream's text chunks read by their learned shape (adapters/http/text_chunks.py) count, relay
and end exactly as chunks parsed whole do: the same output characters fed to the meter, the
same frames, the same garbled chunk refused. And the shape answers a count only for a chunk
whose whole parse is the learned chunk with another content string."""

import json
from typing import Any, cast

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.http.chat import _ChatFrames, frames_of
from adapters.http.text_chunks import TextChunkShape
from application.streams import StreamMeter
from domain.errors import MalformedUpstreamAnswer

# Any text a provider may send, escapes and quotes and backslashes and non-ASCII included.
words = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=6)
BASE = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m", "system_fingerprint": "fp"}


class Meter:
    """What ``_ChatFrames`` writes to (application/streams.py StreamMeter's attributes)."""

    def __init__(self) -> None:
        self.usage: Any = None
        self.output_chars = 0
        self.ttfb_ms: float | None = None

    def first_byte(self) -> None:
        self.ttfb_ms = 1.0


def text_chunk(content: Any, *, escaped: bool = False, **delta: Any) -> bytes:
    if escaped:  # the same chunk, its content written with ASCII escapes (as Python's json writes it)
        return text_chunk("\x01", **delta).replace(b'"\\u0001"', json.dumps(content).encode())
    return orjson.dumps(
        {**BASE, "choices": [{"index": 0, "delta": {"content": content, **delta}, "finish_reason": None}]}
    )


def relayed(chunks: list[bytes], wants_usage: bool, learn: bool) -> tuple[list[bytes], int, str | None]:
    """The frames, the output characters and the refusal (None: none) of ``chunks`` through a relay."""
    meter = Meter()
    frames = _ChatFrames(cast(StreamMeter, meter), wants_usage)
    if not learn:
        frames.shape_tries = 0
    out: list[bytes] = []
    try:
        for data in chunks:
            frames.take(data, out)
    except MalformedUpstreamAnswer as refused:
        return out, meter.output_chars, str(refused)
    return out, meter.output_chars, None


garbles = st.sampled_from([b"", b"x", b'"', b"\\", b"}", b'","a":"', b"\x00", b"\xff", b"\\u12", b'\\"'])


@st.composite
def stream(draw: st.DrawFn) -> list[bytes]:
    """Text chunks of one shape (some escaped), among other chunks and byte-level garbage."""
    chunks = [text_chunk(draw(words), role="assistant")]
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["text", "text", "text", "escaped", "garbled", "finish", "usage", "other"]))
        if kind in ("text", "escaped"):
            chunks.append(text_chunk(draw(words), escaped=kind == "escaped"))
        elif kind == "garbled":  # a text chunk with bytes put into or cut from its content
            raw = text_chunk(draw(words))
            at = draw(st.integers(raw.index(b'"content":') + 10, len(raw) - 1))
            chunks.append(raw[:at] + draw(garbles) + raw[at + draw(st.integers(0, 2)) :])
        elif kind == "finish":
            chunks.append(orjson.dumps({**BASE, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
        elif kind == "usage":
            chunks.append(orjson.dumps({**BASE, "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}))
        else:
            chunks.append(text_chunk(draw(words) or "x", reasoning_content=draw(words)))
    return chunks


@settings(max_examples=500, deadline=None)
@given(chunks=stream(), wants_usage=st.booleans())
def test_text_chunks_read_by_their_shape_relay_and_count_as_chunks_parsed_whole(
    chunks: list[bytes], wants_usage: bool
) -> None:
    assert relayed(chunks, wants_usage, learn=True) == relayed(chunks, wants_usage, learn=False)


def test_the_shape_reads_the_next_text_chunk_and_nothing_of_another_shape() -> None:
    first = orjson.loads(text_chunk("Hello"))
    shape = TextChunkShape.learned(text_chunk("Hello"), first, first["choices"][0]["delta"])
    assert shape is not None
    assert shape.chars(text_chunk(' wor"ld\\ é')) == len(' wor"ld\\ é')
    assert shape.chars(text_chunk("x", reasoning_content="y")) is None  # another shape: parsed whole
    assert shape.chars(text_chunk(None)) is None
    assert shape.chars(text_chunk("ab")[:-1]) is None  # cut short
    garbled = text_chunk("ab").replace(b'"ab"', b'"a"b"')
    assert shape.chars(garbled) is None


@pytest.mark.parametrize(
    "data",
    [
        b'{"choices":[{"delta":{"content":"a"}}],"content":"b"}',  # the key twice: no span proven
        b'{"choices":[{"delta":{"content":"a","content":"b"}}]}',
        b'{"choices":[{"delta":{"cont\\u0065nt":"a"}}],"x\\"content":"a"}',  # the raw key is another's
    ],
)
def test_no_shape_is_learned_where_the_content_span_is_not_proven(data: bytes) -> None:
    chunk = orjson.loads(data)
    assert TextChunkShape.learned(data, chunk, chunk["choices"][0]["delta"]) is None


def test_the_shape_is_learned_from_the_second_text_chunk_when_the_first_also_has_the_role() -> None:
    frames = _ChatFrames(cast(StreamMeter, Meter()), wants_usage=False)
    out: list[bytes] = []
    frames.take(text_chunk("Hello", role="assistant"), out)
    assert frames.text_shape is None and frames.shape_tries == 3  # a shape no later chunk has: not learned
    frames.take(text_chunk(" wor"), out)
    assert frames.text_shape is not None and frames.text_shape.chars(text_chunk("ld!")) == 3
    # a provider sending the role in every chunk: learned from its second chunk, which reads the rest
    frames = _ChatFrames(cast(StreamMeter, Meter()), wants_usage=False)
    frames.take(text_chunk("Hello", role="assistant"), out)
    frames.take(text_chunk(" wor", role="assistant"), out)
    assert frames.text_shape is not None and frames.text_shape.chars(text_chunk("ld!", role="assistant")) == 3


@given(payloads=st.lists(st.binary(max_size=40), min_size=1, max_size=6))
def test_the_frames_joined_at_once_are_the_frames_made_one_by_one(payloads: list[bytes]) -> None:
    assert frames_of(payloads) == b"".join(b"data: " + payload + b"\n\n" for payload in payloads)
