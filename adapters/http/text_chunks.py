"""A stream's ordinary text chunks read without parsing them whole (issue 21).

Most chunks of a stream differ only in their text: the same id, model, choice and nulls
around another ``"content"`` string. ``TextChunkShape.learned`` takes one chunk that was
parsed whole (one choice whose delta is only a non-empty content string) and keeps the bytes
before and after its content string; ``chars`` then reads a chunk made of exactly those bytes
around one JSON string by parsing that string alone: its characters are the chunk's output.

Invariant: ``chars`` answers a number only for a chunk whose whole parse is the learned chunk
with another content string (valid JSON, the same shape: nothing else in it differs); for
anything else it answers None and the caller parses the chunk whole. The learned span is
proven once, when learned: the chunk with an empty string in its place must parse to the
learned chunk with an empty content (so the span is the content's value, and nothing else's).
"""

from typing import Any

import orjson

CONTENT_KEY = b'"content":'
BLANK = b" \t\r\n"
BACKSLASH = 0x5C


class TextChunkShape:
    __slots__ = ("prefix", "suffix", "least")

    def __init__(self, prefix: bytes, suffix: bytes) -> None:
        self.prefix = prefix
        self.suffix = suffix
        self.least = len(prefix) + len(suffix)

    @classmethod
    def learned(cls, data: bytes, chunk: dict[str, Any], delta: dict[str, Any]) -> "TextChunkShape | None":
        """The shape of ``data`` (parsed: ``chunk``, its one choice's ``delta`` holding only a
        non-empty ``content`` string), or None when its content's span cannot be proven."""
        at = data.find(CONTENT_KEY)
        if at < 0 or data.find(CONTENT_KEY, at + 1) >= 0:
            return None
        start = at + len(CONTENT_KEY)
        while start < len(data) and data[start] in BLANK:
            start += 1
        end = _string_end(data, start)
        if end is None:
            return None
        prefix, suffix = data[:start], data[end:]
        try:
            probe = orjson.loads(prefix + b'""' + suffix)
        except orjson.JSONDecodeError:
            return None
        blank = {**chunk, "choices": [{**chunk["choices"][0], "delta": {**delta, "content": ""}}]}
        return cls(prefix, suffix) if probe == blank else None

    def chars(self, data: bytes) -> int | None:
        """The characters of ``data``'s content if it is this shape around another string, else None."""
        if len(data) <= self.least or not data.startswith(self.prefix) or not data.endswith(self.suffix):
            return None
        try:
            text = orjson.loads(data[len(self.prefix) : len(data) - len(self.suffix)])
        except orjson.JSONDecodeError:
            return None
        return len(text) if type(text) is str else None


def _string_end(data: bytes, start: int) -> int | None:
    """Where the JSON string opening at ``start`` ends (just past its closing quote), or None."""
    if data[start : start + 1] != b'"':
        return None
    at = start + 1
    while (quote := data.find(b'"', at)) >= 0:
        escapes = quote
        while data[escapes - 1] == BACKSLASH:
            escapes -= 1
        if (quote - escapes) % 2 == 0:
            return quote + 1
        at = quote + 1
    return None
