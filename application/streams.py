"""A streamed answer's billing, whatever surface relays it (chat completions, Anthropic's
Messages, the Responses API next). The endpoint renders frames; it feeds a ``StreamMeter``
what it relays — the first byte, the provider's usage when a chunk reports it, the output
characters delivered — and ends the billed call (application/calls.py) through it:

- ``finished()``: the provider ended the stream. Charged for the provider's usage, else an
  estimate from the prompt's bytes and the output relayed; status 200. Every estimate's
  output is held to what the request could have produced (``max_tokens``, else the
  model's output limit, × ``n``) and flagged ``output_capped`` when it was.
- ``client_gone()``: the caller went away. The upstream call is aborted and the usage so far
  (else the estimate) is charged as a 499, shielded from the cancellation that ended it.
  When the cancellation was the process's graceful shutdown cutting the stream at its
  deadline (application/shutdown.py), it ends as cut instead: a 503 ``shutting_down``,
  charged like a broken stream (nothing produced: released; else the output delivered only).
- ``broken()``: the provider broke the stream. Nothing produced: the call fails (502
  ``upstream_stream_broken``, hold released, nothing charged). Something produced: only the
  output delivered is charged (no prompt), status 502, same error code.
- ``crashed()``: a bug of ours broke the relay (anything but a provider read failure or the
  caller going away). The upstream call is aborted and the call fails as a 500
  ``internal_error``: hold released, nothing charged (the provider is not blamed).

Invariant: a metered call is ended exactly once. A second ``finished()``, ``broken()`` or ``crashed()``
raises ``StreamAlreadyEnded``; ``client_gone()`` after an ending does nothing (the caller left after
the call was closed: there is nothing more to charge or abort).

The meter is plain attributes written by the endpoint per chunk: no callback, no allocation.
"""

import time
from dataclasses import replace

import anyio

from application.billing import OpenedRequest, Receipt
from application.calls import BilledCalls, StartedCall
from application.ports import ChatExchange
from application.shutdown import SHUTDOWN_STATUS, SHUTTING_DOWN
from domain.estimation import estimated_usage
from domain.usage import Usage
from domain.usage_bounds import usage_bound

STREAM_BROKEN = "upstream_stream_broken"
CLIENT_GONE_STATUS = 499
INTERNAL_ERROR = "internal_error"


class StreamAlreadyEnded(RuntimeError):
    """A metered call was ended twice (a bug in the endpoint relaying it)."""


def elapsed_ms(opened: OpenedRequest) -> float:
    """Milliseconds since the request was opened (its time to first byte when called then)."""
    return round((time.monotonic() - opened.started) * 1000, 3)


def charged_usage(opened: OpenedRequest, reported: Usage | None, output_chars: int, model: str | None = None) -> Usage:
    """The provider's count, else the prompt and the output relayed, estimated (the output
    held to what the request could have produced on ``model``, or on any of its targets).

    A report with an unreadable field (``field_invalid``) that left the input or the output
    at 0 has that count estimated instead (``source="estimated"``, its flags kept): a
    provider's garbled usage is never a free answer."""
    if reported is not None and (
        "field_invalid" not in reported.flags or reported.output_tokens and reported.input_tokens
    ):
        return reported
    estimate = estimated_usage(
        input_chars=opened.shape.prompt_bytes, output_chars=output_chars, output_cap=output_cap(opened, model)
    )
    if reported is None:
        return estimate
    if (reported.input_tokens or not estimate.input_tokens) and (reported.output_tokens or not estimate.output_tokens):
        return reported  # nothing left to estimate
    return replace(
        reported,
        input_tokens=reported.input_tokens or estimate.input_tokens,
        output_tokens=reported.output_tokens or estimate.output_tokens,
        source="estimated",
        flags=reported.flags + estimate.flags,
    )


def output_cap(opened: OpenedRequest, model: str | None = None) -> int:
    """The most output tokens the request could produce on ``model`` (None: on the most
    generous of its targets): ``max_tokens`` (else the model's output limit) × ``n``, the
    output bound its charge is held to (domain/usage_bounds.py)."""
    shape = opened.shape
    targets = [target for target in opened.targets if model is None or target.model == model] or opened.targets
    caps = [
        usage_bound(shape.prompt_bytes, shape.max_output_tokens, shape.choices, target.price).output_tokens
        for target in targets
    ]
    return max(
        caps, default=usage_bound(shape.prompt_bytes, shape.max_output_tokens, shape.choices, None).output_tokens
    )


class StreamMeter:
    """What a relayed stream has produced so far, and its call's one ending.

    The endpoint writes ``usage`` (the provider's count, once a chunk reports it) and adds to
    ``output_chars`` (text, reasoning and tool-call arguments relayed); it calls
    ``first_byte()`` when the first payload arrives (or checks ``ttfb_ms is None`` first)."""

    __slots__ = ("calls", "call", "usage", "output_chars", "ttfb_ms", "ended")

    def __init__(self, calls: BilledCalls, call: StartedCall[ChatExchange]) -> None:
        self.calls = calls
        self.call = call
        self.usage: Usage | None = None
        self.output_chars = 0
        self.ttfb_ms: float | None = None
        self.ended = False

    def first_byte(self) -> None:
        if self.ttfb_ms is None:
            self.ttfb_ms = elapsed_ms(self.call.opened)

    @property
    def produced(self) -> bool:
        """Did the stream deliver anything billable (output, or a usage report)?"""
        return self.output_chars > 0 or self.usage is not None

    def usage_or_estimate(self) -> Usage:
        return charged_usage(self.call.opened, self.usage, self.output_chars, self.call.route.model)

    async def finished(self) -> Receipt:
        """The provider ended the stream: charge its usage (else the estimate)."""
        self._end()
        return await self.calls.complete_served(self.call, self.usage_or_estimate(), self.ttfb_ms)

    async def client_gone(self) -> None:
        """The caller went away: abort the upstream call, charge what was produced as a 499."""
        if self.ended:
            return
        self.ended = True
        self.call.result.abort()
        with anyio.CancelScope(shield=True):
            if self.calls.shutdown.cutting:  # not the caller: the shutdown's deadline cut the stream
                await self._delivered_only(SHUTDOWN_STATUS, SHUTTING_DOWN)
                return
            await self.calls.complete_served(
                self.call, self.usage_or_estimate(), self.ttfb_ms, status=CLIENT_GONE_STATUS
            )

    async def broken(self) -> Receipt | None:
        """The provider broke the stream: fail the call if nothing was produced (None), else
        charge only the output delivered, as a 502 (its receipt)."""
        self._end()
        return await self._delivered_only(502, STREAM_BROKEN)

    async def _delivered_only(self, status: int, code: str) -> Receipt | None:
        """Not the caller's doing: fail the call if nothing was produced (None), else charge
        only the output delivered, as ``status`` with ``code`` (its receipt)."""
        if not self.produced:
            await self.calls.fail(self.call, status, code)
            return None
        cap = output_cap(self.call.opened, self.call.route.model)
        delivered = estimated_usage(input_chars=0, output_chars=self.output_chars, output_cap=cap)
        return await self.calls.complete_served(self.call, delivered, self.ttfb_ms, status=status, error_code=code)

    async def crashed(self) -> None:
        """A bug of ours broke the relay: abort the upstream call, release the hold (a 500)."""
        self._end()
        self.call.result.abort()
        await self.calls.fail(self.call, 500, INTERNAL_ERROR)

    def _end(self) -> None:
        if self.ended:
            raise StreamAlreadyEnded(f"request {self.call.opened.request_id}: its call was already ended")
        self.ended = True
