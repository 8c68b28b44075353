"""The billed call, the use case every API endpoint runs: open (authenticate, route,
price, hold) → start an upstream attempt with failover (application/failover.py) →
confirm the hold → complete (charge) or fail (release).

Invariants (with those of application/billing.py):
- every opened request is closed exactly once: a failure to start is recorded here (and
  its error re-raised for the caller) with the status the caller is answered with
  (``billing.status_of``: adapters/http/errors.py's choice), including a bug of ours (a 500
  ``internal_error``, nothing charged) and a caller that went away meanwhile (a 499:
  no answer, the fact is recorded; a 503 ``shutting_down`` when the process's graceful
  shutdown cut it, application/shutdown.py); the caller then
  completes or fails the started call itself, once (a stream through
  application/streams.py's ``StreamMeter``);
- a started call reaches its caller only once its hold is durable, so nothing is
  answered on a hold that could still be refused; a hold refused after all abandons the
  upstream call here (its exchange is aborted), unanswered and uncharged. A whole
  answer's hold the gate deferred (application/billing.py) is placed by ``complete`` in the
  settlement's own transaction: refused there after all, ``complete`` raises the refusal
  (recorded, nothing charged) and the answer is withheld;
- rate limits (application/rate_limits.py) are checked after authentication and before the
  hold: a refused request is recorded (429 ``rate_limit_exceeded``) with nothing held or
  charged; an admitted one counts its worst-case tokens (the hold's usage bound, input +
  output), and its admission is settled exactly once however the call ends: to the tokens
  charged when it completes, to 0 when it fails, its hold is refused (at the start, or at
  the settlement for a deferred hold) or it never starts;
  any error its caller is answered with carries the admission (``TallyhubError.admission``),
  so that answer has OpenAI's rate-limit headers like every other.
"""

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from uuid import UUID

import anyio
import orjson

from application.billing import Attempt, OpenedRequest, Receipt, RequestBilling, RequestShape
from application.failover import FailedAttempts, Failover, Operation
from application.pending_settlements import PendingSettlement, PendingSettlements
from application.ports import ChatExchange, CredentialSwitch, ProviderAdapter
from application.rate_limits import RequestLimits
from application.routing import Route, Router
from application.shutdown import Shutdown
from domain.errors import InsufficientCredits, RateLimitExceeded, TallyhubError, UpstreamError
from domain.spend_caps import SpendCapReached
from domain.usage import Usage
from domain.usage_bounds import usage_bound

T = TypeVar("T")


@dataclass(frozen=True)
class StartedCall(Generic[T]):
    """An opened request and the upstream attempt serving it, its hold durable (or deferred
    to the settlement, for a whole answer: application/billing.py)."""

    opened: OpenedRequest
    route: Route
    attempts: tuple[Attempt, ...]
    result: T


def start_chat(adapter: ProviderAdapter, route: Route, body: dict[str, Any]) -> Any:
    return adapter.start_chat(route, body)


def embed(adapter: ProviderAdapter, route: Route, body: dict[str, Any]) -> Any:
    return adapter.embed(route, body)


def generate_images(adapter: ProviderAdapter, route: Route, body: dict[str, Any]) -> Any:
    return adapter.generate_images(route, body)


def _abort(exchange: ChatExchange) -> None:
    exchange.abort()


def _nothing_open(document: bytes) -> None:
    """A whole answer holds no connection open: there is nothing to abandon."""


class BilledCalls:
    """Runs billed calls for the API endpoints: ``billing`` opens, settles and releases;
    ``router`` (and its credential health) and ``providers`` (kind -> adapter, the same
    mapping the app's lifespan fills) serve the failover; ``credentials`` (the ledger)
    disables a credential a provider refused; ``limits`` (None: no rate limits) admits and
    settles each request. A failure is recorded with the status its
    caller is answered with: ``billing.status_of``, the one mapping (application/ports.py
    ``StatusOf``) the composition root gave the billing."""

    def __init__(
        self,
        billing: RequestBilling,
        router: Router,
        providers: Mapping[str, ProviderAdapter],
        credentials: CredentialSwitch,
        limits: RequestLimits | None = None,
        shutdown: Shutdown | None = None,
        pending: PendingSettlements | None = None,
    ) -> None:
        self.billing = billing
        self.failover = Failover(router, providers, credentials)
        self.limits = limits
        # the process's drain: a call cancelled by its cut is recorded as such (application/shutdown.py)
        self.shutdown = shutdown if shutdown is not None else Shutdown()
        # a served call's settlement the store failed: retried until it lands (application/pending_settlements.py)
        self.pending = pending

    # open and the starts return their coroutine: no extra frame on the hot path

    def open(self, api_key: str, shape: RequestShape, request_id: UUID) -> Coroutine[Any, Any, OpenedRequest]:
        """Authenticate, route, price, admit (rate limits) and hold (see
        RequestBilling.open_request_async). Raises RateLimitExceeded, recorded, nothing held."""
        if self.limits is None:
            return self.billing.open_request_async(api_key, shape, request_id)
        return self._open_limited(self.limits, api_key, shape, request_id)

    async def _open_limited(
        self, limits: RequestLimits, api_key: str, shape: RequestShape, request_id: UUID
    ) -> OpenedRequest:
        opened = self.billing.prepare_request(api_key, shape, request_id)
        try:
            admitted = await limits.admit(opened.api_key_id, opened.account_id, lambda: worst_case_tokens(opened))
        except RateLimitExceeded as refused:
            await asyncio.get_running_loop().run_in_executor(None, self.billing.record_refusal, opened, refused)
            raise
        if admitted is None:
            return await self.billing.hold_async(opened)
        opened = opened.with_rate_limit(admitted)
        try:
            return await self.billing.hold_async(opened)
        except BaseException as error:
            _with_limits(error, opened)
            await limits.settle(admitted, 0)  # refused or not placed: nothing was used
            raise

    async def _settle_limits(self, opened: OpenedRequest, tokens: int) -> None:
        if opened.rate_limit is not None and self.limits is not None:
            await self.limits.settle(opened.rate_limit, tokens)

    def start_chat(self, opened: OpenedRequest, body: dict[str, Any]) -> Coroutine[Any, Any, StartedCall[ChatExchange]]:
        """A chat exchange, its hold durable; the caller reads it, then completes or fails the call."""
        if opened.rate_limit is None:
            return self._started(opened, start_chat, body, _abort)
        return self._start(opened, start_chat, body, _abort)

    def start_document(
        self, opened: OpenedRequest, operation: Operation[bytes], body: dict[str, Any]
    ) -> Coroutine[Any, Any, StartedCall[bytes]]:
        """A whole answer (``embed``, ``generate_images``), its hold durable."""
        if opened.rate_limit is None:
            return self._started(opened, operation, body, _nothing_open)
        return self._start(opened, operation, body, _nothing_open)

    async def _start(
        self, opened: OpenedRequest, operation: Operation[T], body: dict[str, Any], abandon: Callable[[T], None]
    ) -> StartedCall[T]:
        try:
            return await self._started(opened, operation, body, abandon)
        except BaseException as error:
            # failed (recorded and released), its hold refused after all, or the store failed:
            # nothing was used (settled at most once: the limiter ignores a second settlement)
            _with_limits(error, opened)
            await self._settle_limits(opened, 0)
            raise

    async def _started(
        self, opened: OpenedRequest, operation: Operation[T], body: dict[str, Any], abandon: Callable[[T], None]
    ) -> StartedCall[T]:
        try:
            result, route, attempts = await self.failover.start(opened, operation, body)
        except FailedAttempts as failed:
            await self._fail_with(opened, failed.error, failed.route, failed.attempts)
            raise failed.error from None
        except Exception as error:
            # a bug of ours (a provider's failure is an UpstreamError): released, answered as a 500
            await self._fail_with(opened, error, None, ())
            raise
        except BaseException:
            await self.fail_opened(opened, *self.shutdown.cancelled_as(), None, ())
            raise
        try:
            await self.billing.confirm_hold(opened, route)
        except (InsufficientCredits, SpendCapReached):
            abandon(result)  # refused after all (recorded): nothing is answered, nothing charged
            raise
        except asyncio.CancelledError:
            abandon(result)
            await self.fail_opened(opened, *self.shutdown.cancelled_as(), route, attempts)
            raise
        except BaseException:
            abandon(result)  # the hold was not saved (the store failed): there is nothing to release
            raise
        return StartedCall(opened, route, attempts, result)

    async def complete(
        self,
        call: StartedCall[Any],
        usage: Usage,
        ttfb_ms: float | None,
        status: int = 200,
        error_code: str | None = None,
    ) -> Receipt:
        """Settle the hold for ``usage`` and record the request (and correct its rate-limit
        tokens to those charged), before its caller is answered. A deferred hold refused when
        it is placed here raises InsufficientCredits or SpendCapReached (recorded, nothing
        charged): the caller is answered that, not the answer. When the store fails the
        settlement (transiently), the caller is answered that error (503 ``store_unavailable``)
        and the request's void is kept pending (application/voids.py): once the store is back
        its hold is released, or its charge refunded if the settlement landed after all."""
        try:
            return await self._complete_limited(call, usage, ttfb_ms, status, error_code)
        except Exception as error:
            if self.pending is None or self.billing.mode != "credits" or not self.pending.transient(error):
                raise
            opened = call.opened
            void = self.billing.void(opened, error, call.route, call.attempts)
            self.pending.keep(
                PendingSettlement(
                    opened.request_id,
                    self.billing.cost_of(opened, call.route, usage),
                    opened.started + self.billing.hold_ttl.total_seconds(),
                    lambda: self.billing.ledger.change_account_async(opened.account_id, void),
                    kind="void",
                )
            )
            raise

    async def _complete_limited(
        self,
        call: StartedCall[Any],
        usage: Usage,
        ttfb_ms: float | None,
        status: int,
        error_code: str | None,
    ) -> Receipt:
        if call.opened.rate_limit is None:
            return await self._complete(call, usage, ttfb_ms, status, error_code)
        used: Usage | None = usage  # what the provider produced, unless charged otherwise or refused
        try:
            receipt = await self._complete(call, usage, ttfb_ms, status, error_code)
            used = receipt.usage
            return receipt
        except (InsufficientCredits, SpendCapReached) as refused:  # a deferred hold, refused after all
            _with_limits(refused, call.opened)
            used = None
            raise
        finally:
            await self._settle_limits(call.opened, used.input_tokens + used.output_tokens if used is not None else 0)

    async def complete_served(
        self,
        call: StartedCall[Any],
        usage: Usage,
        ttfb_ms: float | None,
        status: int = 200,
        error_code: str | None = None,
    ) -> Receipt:
        """``complete`` a call whose caller was already served (a stream's content relayed). When
        the store fails the settlement (transiently), it is kept pending and retried in the
        background until it lands (application/pending_settlements.py); the error is raised all
        the same: nothing durable, so no cost is claimed to the caller."""
        try:
            return await self._complete_limited(call, usage, ttfb_ms, status, error_code)
        except Exception as error:
            if self.pending is None or not self.pending.transient(error):
                raise
            opened = call.opened
            self.pending.keep(
                PendingSettlement(
                    opened.request_id,
                    self.billing.cost_of(opened, call.route, usage),
                    opened.started + self.billing.hold_ttl.total_seconds(),
                    lambda: self._complete(call, usage, ttfb_ms, status, error_code),
                )
            )
            raise

    def _complete(
        self, call: StartedCall[Any], usage: Usage, ttfb_ms: float | None, status: int, error_code: str | None
    ) -> Coroutine[Any, Any, Receipt]:
        return self.billing.complete_request_async(
            call.opened,
            call.route,
            usage,
            status=status,
            ttfb_ms=ttfb_ms,
            attempts=call.attempts,
            error_code=error_code,
        )

    async def fail(self, call: StartedCall[Any], status: int, code: str) -> None:
        """Release the hold and record the request as failed (nothing charged)."""
        await self.fail_opened(call.opened, status, code, call.route, call.attempts)

    async def cancelled(self, call: StartedCall[Any]) -> None:
        """The call's task was cancelled before it was answered: ``fail`` it as the caller
        gone (499) or, at a graceful shutdown's deadline, as cut (503 ``shutting_down``)."""
        await self.fail(call, *self.shutdown.cancelled_as())

    async def fail_for(self, call: StartedCall[Any], error: Exception) -> None:
        """``fail`` with the status and code the caller is answered ``error`` with."""
        await self._fail_with(call.opened, error, call.route, call.attempts)

    async def _fail_with(
        self, opened: OpenedRequest, error: Exception, route: Route | None, attempts: tuple[Attempt, ...]
    ) -> None:
        code = error.code if isinstance(error, TallyhubError) else "internal_error"
        _with_limits(error, opened)  # the caller is answered ``error``: with its limits' headers
        await self.fail_opened(opened, self.billing.status_of(error), code, route, attempts)

    async def fail_opened(
        self, opened: OpenedRequest, status: int, code: str, route: Route | None, attempts: tuple[Attempt, ...]
    ) -> None:
        with anyio.CancelScope(shield=True):
            try:
                await self.billing.fail_request_async(
                    opened, status=status, error_code=code, route=route, attempts=attempts
                )
            finally:
                await self._settle_limits(opened, 0)

    async def document(self, call: StartedCall[bytes]) -> dict[str, Any]:
        """A started call's whole answer as a JSON object; an unreadable one fails the call (no charge)."""
        try:
            document = orjson.loads(call.result)
        except orjson.JSONDecodeError:
            document = None
        if not isinstance(document, dict):
            error = UpstreamError("the provider sent an unreadable response", status=502, code="upstream_bad_response")
            await self.fail_for(call, error)
            raise error
        return document


def _with_limits(error: BaseException, opened: OpenedRequest) -> None:
    """Give an error of an admitted request the admission, for its answer's rate-limit headers
    (domain/errors.py ``TallyhubError.admission``); a refusal keeps its own."""
    if opened.rate_limit is not None and isinstance(error, TallyhubError) and error.admission is None:
        error.admission = opened.rate_limit.admission


def worst_case_tokens(opened: OpenedRequest) -> int:
    """The most tokens the request could use, input and output, on the dearest of its
    targets: the bound its charge is held to (domain/usage_bounds.py), which its hold covers."""
    shape = opened.shape
    worst = 0
    for target in opened.targets:
        bound = usage_bound(shape.prompt_bytes, shape.max_output_tokens, shape.choices, target.price, shape.images)
        worst = max(worst, bound.input_tokens + bound.output_tokens)
    return worst
