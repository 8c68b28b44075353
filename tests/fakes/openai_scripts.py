"""Scripted behaviours for the fake OpenAI upstream.

A :class:`Scripted` value describes how the fake answers *one* model request
(``POST /v1/chat/completions`` or ``POST /v1/embeddings``).  Build them with
the class-method constructors and combine several for the same request with
``|``::

    upstream.script(
        Scripted.error(429, "Rate limit reached", code="rate_limit_exceeded", retry_after=1),
        Scripted.delay(0.2) | Scripted.usage(prompt_tokens=7, cached_tokens=3),
        Scripted.break_stream_after(2),
    )

Queued values are consumed FIFO, one per model request; ``GET /v1/models``
does not consume them.  When the queue is empty the fake behaves normally.
``RecordedRequest`` is re-exported from :mod:`tests.fakes.fake_server`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .fake_server import RecordedRequest, Script

__all__ = ["RecordedRequest", "Scripted"]


@dataclass(frozen=True)
class Scripted(Script):
    """How the fake answers one model request.  Unset fields mean "normal"."""

    # Sleep before doing anything else (headers included).
    delay_seconds: float = 0.0
    # Answer with an OpenAI error envelope instead of a result.  Takes
    # precedence over authentication and validation.
    error_status: int | None = None
    error_message: str = ""
    error_code: str | None = None
    error_type: str | None = None  # default derived from the status
    retry_after: float | None = None  # sent as the ``retry-after`` header
    # Answer with exactly these bytes (e.g. an HTML 502 page from a proxy).
    raw_status: int | None = None
    raw_body: str = ""
    raw_content_type: str = "text/html"
    # Streams: send the role chunk plus this many content chunks, then drop the
    # TCP connection without the final chunks or ``[DONE]``.  Non-streaming
    # requests: drop the connection without sending any response.
    break_after: int | None = None
    # Streams: after this many content chunks, pause ``stall_seconds`` and then
    # carry on normally.  Non-streaming requests: pause before responding.
    stall_after: int | None = None
    stall_seconds: float = 0.0
    # Streams: sleep this long before every frame after the first.
    chunk_delay_seconds: float | None = None
    # Replace some usage numbers (keys: prompt_tokens, completion_tokens,
    # cached_tokens, reasoning_tokens); total_tokens is recomputed.
    usage_overrides: dict[str, int] = field(default_factory=dict)
    # Omit usage: no usage chunk in streams even when include_usage is set, no
    # ``usage`` key in non-streaming bodies.
    omit_usage: bool = False
    # Answer with this text instead of the server's reply text.
    reply_text: str | None = None
    # Send exactly this ``usage`` object (e.g. without total_tokens, with nulls) instead of
    # the computed one; usage_overrides are then ignored.
    usage_raw: dict[str, Any] | None = None
    # The ``service_tier`` the answer and each chunk report (None: "default", as OpenAI).
    service_tier: str | None = None
    # Drop the connection before any answer, streams included (after the scripted delay).
    drop_at_once: bool = False
    # Every drop (``drop_at_once``, ``break_after``, ``cut_body_after``) is a TCP reset (RST)
    # instead of a clean close (FIN).
    reset: bool = False
    # Plain answers: send the headers (the whole body's Content-Length) and this many bytes of
    # the body, then drop the connection, or with ``hang_body_seconds`` pause that long and
    # send the rest.
    cut_body_after: int | None = None
    hang_body_seconds: float = 0.0
    # Streams: end the response cleanly (its chunked terminator) without ``data: [DONE]``.
    omit_done: bool = False
    # Streams: after the role chunk, content chunks without end, until the client goes away.
    endless: bool = False
    # Plain answers: the chat completion padded with spaces to this many bytes, sent in
    # 1 MiB blocks (never built in memory) with its Content-Length.
    oversize_bytes: int | None = None

    # -- constructors -------------------------------------------------------

    @classmethod
    def normal(cls) -> Scripted:
        """Consume one request without changing anything."""
        return cls()

    @classmethod
    def error(
        cls,
        status: int,
        message: str = "The server had an error while processing your request.",
        code: str | None = None,
        retry_after: float | None = None,
        *,
        type: str | None = None,
    ) -> Scripted:
        return cls(
            error_status=status, error_message=message, error_code=code, retry_after=retry_after, error_type=type
        )

    @classmethod
    def raw(cls, status: int, body: str, content_type: str = "text/html") -> Scripted:
        return cls(raw_status=status, raw_body=body, raw_content_type=content_type)

    @classmethod
    def delay(cls, seconds: float) -> Scripted:
        return cls(delay_seconds=seconds)

    @classmethod
    def break_stream_after(cls, chunks: int) -> Scripted:
        return cls(break_after=chunks)

    @classmethod
    def stall_stream_after(cls, chunks: int, seconds: float) -> Scripted:
        return cls(stall_after=chunks, stall_seconds=seconds)

    @classmethod
    def chunk_delay(cls, seconds: float) -> Scripted:
        return cls(chunk_delay_seconds=seconds)

    @classmethod
    def raw_usage(cls, usage: dict[str, Any]) -> Scripted:
        """Report exactly ``usage`` (any shape: missing totals, nulls, strings)."""
        return cls(usage_raw=usage)

    @classmethod
    def answered_tier(cls, tier: str) -> Scripted:
        """Report ``service_tier: tier`` in the answer (and every chunk), whatever was asked."""
        return cls(service_tier=tier)

    @classmethod
    def usage(
        cls,
        *,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        cached_tokens: int | None = None,
        reasoning_tokens: int | None = None,
    ) -> Scripted:
        given = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "cached_tokens": cached_tokens,
            "reasoning_tokens": reasoning_tokens,
        }
        return cls(usage_overrides={k: v for k, v in given.items() if v is not None})

    @classmethod
    def no_usage(cls) -> Scripted:
        return cls(omit_usage=True)

    @classmethod
    def reply(cls, text: str) -> Scripted:
        return cls(reply_text=text)

    @classmethod
    def drop(cls, *, reset: bool = False) -> Scripted:
        """Drop the connection before any answer: FIN, or with ``reset`` a TCP reset."""
        return cls(drop_at_once=True, reset=reset)

    @classmethod
    def cut_body(cls, after_bytes: int, *, reset: bool = False) -> Scripted:
        """Plain answers: the headers and ``after_bytes`` of the body, then drop (FIN or RST)."""
        return cls(cut_body_after=after_bytes, reset=reset)

    @classmethod
    def hang_body(cls, after_bytes: int, seconds: float) -> Scripted:
        """Plain answers: the headers and ``after_bytes`` of the body, then ``seconds`` of silence."""
        return cls(cut_body_after=after_bytes, hang_body_seconds=seconds)

    @classmethod
    def without_done(cls) -> Scripted:
        return cls(omit_done=True)

    @classmethod
    def endless_stream(cls) -> Scripted:
        return cls(endless=True)

    @classmethod
    def oversize(cls, size: int) -> Scripted:
        return cls(oversize_bytes=size)
