"""The life of one billed request: open (authenticate, route, price, hold), then
complete (settle and record) or fail (release and record).

Invariants:
- in credits mode every request holds its worst case first, decided by the account's
  writer in order with every other change of the account (so requests never overspend),
  and nothing is answered before that hold is durable (``confirm_hold``). The upstream
  call waits for the durable hold, unless the hold gate (application/hold_gate.py)
  already knows the hold fits: then it starts at once and the hold is saved meanwhile.
  A hold refused after all (the account was moved by a change the gate could not see)
  is recorded as the request's refusal, and its call is abandoned, unanswered and
  uncharged;
- a whole answer (not a stream) is given only after its settlement is durable, so when
  the gate admits its hold, the hold is *deferred*: placed by the request's closing change
  itself, in the settlement's (or the release's) transaction, one commit per request
  instead of two. The events are those of a hold saved first (placed, then settled or
  released); a deferred hold refused when it is placed after all is the refusal above,
  decided in that same transaction: the answer is withheld, the refusal recorded, nothing
  charged;
- the hold is closed exactly once: settled with the record of a completed request, or
  released with the record of a failed one, in one transaction each (the writer runs an
  account's changes in the order they were handed to it, so a settlement or release
  never overtakes its hold);
- a request is recorded at most once (the record's id is the request id);
- an upstream failure is never charged;
- a charge never exceeds what the request could have cost: usage a provider reports
  beyond the request's bounds is charged at them (domain/usage_bounds.py).
"""

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from application.hold_gate import Reservation
from application.ledger import Ledger
from application.ports import RequestObserver, StatusOf
from application.rate_limits import AdmittedRequest
from application.routing import Route, Router, Target
from application.voids import STORE_UNAVAILABLE, Void
from domain.account import Account
from domain.attribution import Attribution
from domain.errors import InsufficientCredits, ModelNotFound, RateLimitExceeded
from domain.pricing import price_usage, provider_cost_of, worst_case_usage
from domain.request_record import FailedAttempt, Outcome, RequestDetails, RequestRecord
from domain.slots_init import slots_init
from domain.spend_caps import SpendCapReached
from domain.usage import Usage
from domain.usage_bounds import clamp_usage, usage_bound

BillingMode = Literal["track", "credits"]

log = logging.getLogger("tallyhub.billing")


@slots_init  # built on every request: domain/slots_init.py
@dataclass(frozen=True, slots=True)
class RequestShape:
    """What the hold estimate needs to know about a request."""

    model: str
    prompt_bytes: int
    max_output_tokens: int | None
    choices: int
    stream: bool
    endpoint: str = "chat.completions"
    images: int = 0  # images asked for (image generation)
    attribution: Attribution | None = None  # user, metadata and tags the caller sent; recorded as sent


@slots_init  # built on every request: domain/slots_init.py
@dataclass(frozen=True, slots=True)
class OpenedRequest:
    request_id: UUID
    account_id: UUID
    api_key_id: UUID
    shape: RequestShape
    targets: tuple[Target, ...]  # the model and its fallbacks, in order
    price_book_version: int
    hold: int
    started: float  # time.monotonic() at open
    started_at: datetime
    # the hold's save when the upstream call may start before it is durable; see confirm_hold
    hold_durable: "asyncio.Future[bool] | None" = field(default=None, compare=False, repr=False)
    # its rate-limit admission, when limits apply (application/calls.py settles it once)
    rate_limit: AdmittedRequest | None = field(default=None, compare=False, repr=False)
    # a whole answer's hold the gate deferred: placed by the closing change (module docstring)
    deferred_hold: Reservation | None = field(default=None, compare=False, repr=False)

    def with_hold_durable(self, durable: "asyncio.Future[bool]") -> "OpenedRequest":
        return self._with(durable, self.rate_limit, self.deferred_hold)

    def with_deferred_hold(self, reservation: Reservation) -> "OpenedRequest":
        return self._with(self.hold_durable, self.rate_limit, reservation)

    def with_rate_limit(self, admitted: AdmittedRequest) -> "OpenedRequest":
        return self._with(self.hold_durable, admitted, self.deferred_hold)

    def _with(
        self,
        hold_durable: "asyncio.Future[bool] | None",
        rate_limit: AdmittedRequest | None,
        deferred_hold: Reservation | None,
    ) -> "OpenedRequest":
        """A copy with these three: ``dataclasses.replace`` without its walk over the fields
        (it runs on every request); the other fields are copied as they are, already valid."""
        return OpenedRequest(
            self.request_id,
            self.account_id,
            self.api_key_id,
            self.shape,
            self.targets,
            self.price_book_version,
            self.hold,
            self.started,
            self.started_at,
            hold_durable,
            rate_limit,
            deferred_hold,
        )


@dataclass(frozen=True)
class Receipt:
    request_id: UUID
    charge: int
    cost: int
    uncollected: int
    price_book_version: int
    priced: bool
    usage: Usage


@dataclass(frozen=True)
class Attempt:
    """An upstream attempt that failed before serving the request."""

    route: Route
    status: int
    error_code: str
    latency_ms: float
    retry: int = 0  # n: the n-th retry of the same credential (application/failover.py)


class RequestBilling:
    """``status_of``: the status a refused hold is recorded with, the one the caller is
    answered with (application/ports.py ``StatusOf``). ``observer``: told of each request
    once its record is durably saved, exactly once per record (metrics, access log); its
    errors are counted in ``observer_errors`` and logged once, never raised into billing."""

    def __init__(
        self,
        ledger: Ledger,
        router: Router,
        *,
        mode: BillingMode,
        hold_ttl: timedelta,
        status_of: StatusOf,
        early_upstream: bool = True,
        observer: RequestObserver | None = None,
    ) -> None:
        self.ledger = ledger
        self.router = router
        self.mode = mode
        self.hold_ttl = hold_ttl
        self.status_of = status_of
        self.early_upstream = early_upstream  # False: every upstream call waits for its durable hold
        self.observer = observer
        self.observer_errors = 0

    def open_request(self, api_key: str, shape: RequestShape, request_id: UUID | None = None) -> OpenedRequest:
        """Authenticate, route and price the request, and in credits mode hold its worst case.

        Raises AuthenticationFailed, PermissionDenied (a model the key may not use),
        ModelNotFound, InsufficientCredits, SpendCapReached.
        """
        opened = self.prepare_request(api_key, shape, request_id)
        if self.mode == "credits":
            try:
                self.ledger.change_account(opened.account_id, self._hold(opened))
            except (InsufficientCredits, SpendCapReached) as refused:
                self.record_refusal(opened, refused)
                raise
        return opened

    async def open_request_async(
        self, api_key: str, shape: RequestShape, request_id: UUID | None = None
    ) -> OpenedRequest:
        """``open_request`` on the event loop: the reads come from the read cache and the hold
        goes to the group-commit writer, so no thread waits. Returns once the hold is durable,
        or at once when the hold gate admits it (``hold_durable`` is then set): either way the
        caller must ``confirm_hold`` before it answers. A whole answer's admitted hold is
        deferred instead (``deferred_hold`` set, nothing handed to the writer yet): placed by
        its settlement or release. A refusal is recorded on a thread."""
        return await self.hold_async(self.prepare_request(api_key, shape, request_id))

    async def hold_async(self, opened: OpenedRequest) -> OpenedRequest:
        """The hold of a prepared request (``prepare_request``), as ``open_request_async`` places it."""
        if self.mode != "credits":
            return opened
        gate = self.ledger.hold_gate
        early = False
        if gate is not None and self.early_upstream:
            if not opened.shape.stream:  # answered only once settled: its settlement's commit will do
                reservation = gate.defers(opened.account_id, opened.hold, opened.started_at, self.hold_ttl)
                if reservation is not None:
                    return opened.with_deferred_hold(reservation)
            early = gate.admits(opened.account_id, opened.hold, opened.started_at)
        durable = self.ledger.start_account_change(opened.account_id, self._hold(opened))
        if gate is not None:
            gate.track(opened.account_id, opened.hold, durable)  # every hold, early or not
        if early:
            return opened.with_hold_durable(durable)
        await self._held(opened, durable)
        return opened

    async def confirm_hold(self, opened: OpenedRequest, route: Route | None = None) -> None:
        """Wait until the request's hold is durable (at once when it was before the call, or
        when it is deferred to the request's settlement).

        Raises InsufficientCredits or SpendCapReached when the hold was refused after all
        (see the module's invariants): the caller then abandons its upstream call. The
        refusal is recorded with ``route``, the provider and credential the abandoned call
        went to, so the provider's bill for it can be reconciled. Any other error (the store
        failed) is raised as it is."""
        if opened.hold_durable is not None:
            await self._held(opened, opened.hold_durable, route)

    async def _held(self, opened: OpenedRequest, durable: "asyncio.Future[bool]", route: Route | None = None) -> None:
        try:
            await asyncio.shield(durable)
        except (InsufficientCredits, SpendCapReached) as refused:
            await asyncio.get_running_loop().run_in_executor(None, self.record_refusal, opened, refused, route)
            raise

    def prepare_request(self, api_key: str, shape: RequestShape, request_id: UUID | None = None) -> OpenedRequest:
        """Authenticate, route and price the request; its hold amount, not yet placed."""
        started = time.monotonic()
        request_id = request_id or uuid4()
        key = self.ledger.authenticate(api_key)
        key.ensure_allows(shape.model)
        now = self.ledger.clock.now()
        book = self.ledger.recent_price_book().effective(now)
        targets = self.router.targets(shape.model, book)
        if self.mode == "credits":
            targets = [target for target in targets if target.price is not None]
            if not targets:
                raise ModelNotFound(
                    f"the model {shape.model!r} has no price, so it cannot be sold; ask the operator to set one"
                )
        hold = max(self._worst_case(shape, target) for target in targets) if self.mode == "credits" else 0
        return OpenedRequest(
            request_id=request_id,
            account_id=key.account_id,
            api_key_id=key.id,
            shape=shape,
            targets=tuple(targets),
            price_book_version=book.number,
            hold=hold,
            started=started,
            started_at=now,
        )

    def record_refusal(
        self,
        opened: OpenedRequest,
        refused: InsufficientCredits | SpendCapReached | RateLimitExceeded,
        route: Route | None = None,
    ) -> None:
        """``route``: where the call went when it was abandoned after its hold was refused."""
        details = self._details(opened, route, "failed", status=self.status_of(refused), error_code=refused.code)
        if self._record(RequestRecord.failed(opened.request_id, details)):
            self._observe(opened, details, ())

    def complete_request(
        self,
        opened: OpenedRequest,
        route: Route,
        usage: Usage,
        *,
        status: int = 200,
        ttfb_ms: float | None = None,
        attempts: tuple[Attempt, ...] = (),
        error_code: str | None = None,
    ) -> Receipt:
        """Charge for what ``route`` served (settling the hold) and record the request, once.

        ``error_code`` names what cut a partly served request short (a broken stream)."""
        settlement = self._settlement(opened, route, usage, status, ttfb_ms, attempts, error_code)
        if self.mode == "credits":
            try:
                recorded = self.ledger.change_account(opened.account_id, settlement.settle)
            finally:
                _release_reservation(opened)
            self._raise_refusal(opened, settlement)
        else:
            recorded = self._record(settlement.record())
        if recorded:
            self._observe(opened, settlement.details, attempts)
        return settlement.receipt(recorded or self.mode != "credits")

    async def complete_request_async(
        self,
        opened: OpenedRequest,
        route: Route,
        usage: Usage,
        *,
        status: int = 200,
        ttfb_ms: float | None = None,
        attempts: tuple[Attempt, ...] = (),
        error_code: str | None = None,
    ) -> Receipt:
        """``complete_request`` on the event loop (credits mode: through the writer, no thread)."""
        settlement = self._settlement(opened, route, usage, status, ttfb_ms, attempts, error_code)
        loop = asyncio.get_running_loop()
        if self.mode == "credits":
            # a cost above the hold takes room the gate must not offer: counted until answered
            saved = await self._close(opened, settlement.settle, settlement.cost)
            self._raise_refusal(opened, settlement)
            if saved:
                self._observe(opened, settlement.details, attempts)
                return settlement.receipt(True)
            return await loop.run_in_executor(None, settlement.receipt, False)  # the earlier settlement's
        if await loop.run_in_executor(None, self._record, settlement.record()):
            self._observe(opened, settlement.details, attempts)
        return settlement.receipt(True)

    def _raise_refusal(self, opened: OpenedRequest, settlement: "_Settlement") -> None:
        """A settlement that found its deferred hold refused after all recorded the refusal
        (nothing charged): tell the observer, and raise it for the caller to be answered."""
        if settlement.refused is not None:
            refused, details = settlement.refused
            self._observe(opened, details, ())
            raise refused

    def cost_of(self, opened: OpenedRequest, route: Route, usage: Usage) -> int:
        """What completing the request for ``usage`` on ``route`` costs (its charge before the
        account's cap): nanocredits."""
        return self._settlement(opened, route, usage, 200, None, (), None).cost

    def fail_request(
        self,
        opened: OpenedRequest,
        *,
        status: int,
        error_code: str,
        route: Route | None = None,
        ttfb_ms: float | None = None,
        attempts: tuple[Attempt, ...] = (),
    ) -> None:
        """Release the hold without charging and record the failure, once."""
        release = self._release(opened, status, error_code, route, ttfb_ms, attempts)
        if self.mode == "credits":
            try:
                recorded = self.ledger.change_account(opened.account_id, release)
            finally:
                _release_reservation(opened)
        else:
            recorded = self._record(release.record())
        if recorded:
            self._observe(opened, release.details, attempts)

    async def fail_request_async(
        self,
        opened: OpenedRequest,
        *,
        status: int,
        error_code: str,
        route: Route | None = None,
        ttfb_ms: float | None = None,
        attempts: tuple[Attempt, ...] = (),
    ) -> None:
        if self.mode == "credits":
            release = self._release(opened, status, error_code, route, ttfb_ms, attempts)
            if await self._close(opened, release):
                self._observe(opened, release.details, attempts)
        else:
            await asyncio.get_running_loop().run_in_executor(
                None,
                lambda: self.fail_request(
                    opened, status=status, error_code=error_code, route=route, ttfb_ms=ttfb_ms, attempts=attempts
                ),
            )

    async def _close(
        self, opened: OpenedRequest, change: Callable[[Account], list[Aggregate] | None], cost: int = 0
    ) -> bool:
        """Hand the request's closing change (its settlement or release) to the writer and wait,
        shielded, until it is durable; ``cost`` is counted by the gate until then. A deferred
        hold's reservation is released by the change itself; released here too once it is
        answered, in case it never ran (its account could not be loaded, the store failed)."""
        saved = self.ledger.start_account_change(opened.account_id, change)
        gate = self.ledger.hold_gate
        if gate is not None and cost:
            gate.track(opened.account_id, cost, saved)
        try:
            return await asyncio.shield(saved)
        finally:
            _release_reservation(opened)

    def void(self, opened: OpenedRequest, error: Exception, route: Route | None, attempts: tuple[Attempt, ...]) -> Void:
        """The account command voiding a request whose caller was answered ``error`` (the store
        away: 503 ``store_unavailable``) after its settlement failed (application/voids.py).
        A deferred hold was placed only if that settlement landed after all: then the void
        refunds the charge, as for a hold saved first; else there is no hold to release."""
        release = self._release(opened, self.status_of(error), STORE_UNAVAILABLE, route, None, attempts)
        return Void(self.ledger, opened.request_id, release.record)

    def _hold(self, opened: OpenedRequest) -> Callable[[Account], list[Aggregate]]:
        """The change placing the request's hold. What this process's deferred holds reserve
        on the account (application/hold_gate.py) is not available to it: a deferred hold
        was admitted on that credit, and is placed only with its request's settlement."""
        expires_at = opened.started_at + self.hold_ttl
        gate = self.ledger.hold_gate

        def hold(account: Account) -> list[Aggregate]:
            if gate is not None and not gate.leaves_room(account, opened.hold, opened.started_at):
                left = max(0, account.available - gate.reserved(account.id))
                raise InsufficientCredits(account.id, needed=opened.hold, available=left)
            account.place_hold(
                opened.request_id, opened.hold, expires_at, api_key_id=opened.api_key_id, now=opened.started_at
            )
            return []

        return hold

    def _place_deferred(self, opened: OpenedRequest, account: Account, route: Route | None) -> "_Refusal | None":
        """Place a deferred hold, by its request's closing change: its reservation is released
        first (the hold now counts for itself). A refusal (the account moved in a way the gate
        could not see) is returned, with the details the request is then recorded with (as
        ``record_refusal`` would, ``route`` the call it abandons), not raised."""
        assert opened.deferred_hold is not None
        opened.deferred_hold.release()
        try:
            self._hold(opened)(account)
        except (InsufficientCredits, SpendCapReached) as refused:
            status = self.status_of(refused)
            return refused, self._details(opened, route, "failed", status=status, error_code=refused.code)
        return None

    def _settlement(
        self,
        opened: OpenedRequest,
        route: Route,
        usage: Usage,
        status: int,
        ttfb_ms: float | None,
        attempts: tuple[Attempt, ...],
        error_code: str | None,
    ) -> "_Settlement":
        price = self._target_of(opened, route).price
        shape = opened.shape
        charged_usage = clamp_usage(
            usage, usage_bound(shape.prompt_bytes, shape.max_output_tokens, shape.choices, price, shape.images)
        )
        cost = price_usage(price, charged_usage) if price is not None else 0
        provider_cost = provider_cost_of(price, charged_usage)
        reported_usage = usage if charged_usage is not usage else None  # the report as it came, for reconciliation

        def charged(charge: int) -> RequestDetails:
            """The record's details once the account has decided what is charged of ``cost``."""
            return self._details(
                opened,
                route,
                "completed",
                status=status,
                usage=charged_usage,
                cost=cost,
                ttfb_ms=ttfb_ms,
                error_code=error_code,
                charge=charge,
                uncollected=cost - charge,
                provider_cost=provider_cost,
                reported_usage=reported_usage,
            )

        return _Settlement(self, opened, route, charged, cost, attempts, price is not None, charged_usage)

    def _release(
        self,
        opened: OpenedRequest,
        status: int,
        error_code: str,
        route: Route | None,
        ttfb_ms: float | None,
        attempts: tuple[Attempt, ...],
    ) -> "_Release":
        details = self._details(opened, route, "failed", status=status, error_code=error_code, ttfb_ms=ttfb_ms)
        return _Release(self, opened, details, error_code, attempts)

    def _worst_case(self, shape: RequestShape, target: Target) -> int:
        assert target.price is not None
        usage = worst_case_usage(shape.prompt_bytes, shape.max_output_tokens, shape.choices, target.price, shape.images)
        return price_usage(target.price, usage)

    @staticmethod
    def _target_of(opened: OpenedRequest, route: Route) -> Target:
        for target in opened.targets:
            if target.model == route.model:
                return target
        raise AssertionError(f"{route.model} is not a target of request {opened.request_id}")

    def _record(self, record: RequestRecord) -> bool:
        """Save the record; False when the request was recorded already (at most once)."""
        try:
            self.ledger.save(record)
        except IntegrityError:
            return False
        return True

    def _observe(self, opened: OpenedRequest, details: RequestDetails, attempts: tuple[Attempt, ...]) -> None:
        """Tell the observer of a record just saved; its failure is counted, never raised."""
        if self.observer is None:
            return
        try:
            self.observer.recorded(opened.request_id, details, len(attempts))
        except Exception:
            self.observer_errors += 1
            if self.observer_errors == 1:  # once: a broken observer must not flood the log either
                log.exception("a request observer failed (counted in observer_errors; billing goes on)")

    def receipt_of(self, request_id: UUID) -> Receipt:
        record = self.ledger.find(request_id)
        assert isinstance(record, RequestRecord), f"request {request_id} has no record"
        details = record.details
        assert details.usage is not None and details.price_book_version is not None, "not a completed request"
        return Receipt(
            request_id=request_id,
            charge=details.charge,
            cost=details.cost,
            uncollected=details.uncollected,
            price_book_version=details.price_book_version,
            priced=details.priced,
            usage=details.usage,
        )

    def _details(
        self,
        opened: OpenedRequest,
        route: Route | None,
        outcome: Outcome,
        *,
        status: int,
        usage: Usage | None = None,
        cost: int = 0,
        charge: int = 0,
        uncollected: int = 0,
        error_code: str | None = None,
        ttfb_ms: float | None = None,
        provider_cost: int | None = None,
        reported_usage: Usage | None = None,
    ) -> RequestDetails:
        target = self._target_of(opened, route) if route else opened.targets[0]
        return RequestDetails(
            outcome=outcome,
            account_id=opened.account_id.hex,
            api_key_id=opened.api_key_id.hex,
            requested_model=opened.shape.model,
            model=target.model,
            provider=target.provider.name,
            upstream_model=target.upstream_model,
            credential_id=route.credential_id if route else None,
            endpoint=opened.shape.endpoint,
            stream=opened.shape.stream,
            status=status,
            error_code=error_code,
            usage=usage,
            charge=charge,
            cost=cost,
            uncollected=uncollected,
            hold=opened.hold,
            price_book_version=opened.price_book_version,
            priced=target.price is not None,
            latency_ms=_elapsed_ms(opened),
            ttfb_ms=ttfb_ms,
            started_at=opened.started_at.isoformat(),
            provider_cost=provider_cost,
            reported_usage=reported_usage,
            attribution=opened.shape.attribution,
        )


_Refusal = tuple[InsufficientCredits | SpendCapReached, RequestDetails]


class _ClosingChange:
    """A request's closing change, its settlement or its release: run by the writer, maybe
    more than once on a conflict."""

    def __init__(self, billing: RequestBilling, opened: OpenedRequest) -> None:
        self.billing, self.opened = billing, opened
        self._runs = 0

    def _deferred_hold(self, account: Account) -> Literal["none", "to place", "closed"]:
        """What this run finds of the request's deferred hold: ``"to place"`` when it was
        deferred and is not on the account, ``"closed"`` when that is because an earlier run
        closed the request already (on a first run nothing of the request is saved; a later
        one may follow a save that landed), ``"none"`` otherwise (none deferred, or placed)."""
        first_run = self._runs == 0
        self._runs += 1
        request_id = self.opened.request_id
        if self.opened.deferred_hold is None or request_id.hex in account.holds:
            return "none"
        if not first_run and self.billing.ledger.find(request_id) is not None:
            return "closed"
        return "to place"


class _Settlement(_ClosingChange):
    """Charging one completed request: ``settle`` is the account change (run by the writer,
    maybe more than once on a conflict: it builds the record afresh each time, and decides
    a deferred hold afresh: ``refused`` is set when it was refused on the last run).
    ``charged`` builds the record's details once the charge is decided, one build a run."""

    def __init__(
        self,
        billing: RequestBilling,
        opened: OpenedRequest,
        route: Route,
        charged: Callable[[int], RequestDetails],
        cost: int,
        attempts: tuple[Attempt, ...],
        priced: bool,
        usage: Usage,
    ) -> None:
        super().__init__(billing, opened)
        self.route, self._charged, self.cost = route, charged, cost
        self.attempts, self.priced, self.usage = attempts, priced, usage
        self.refused: _Refusal | None = None
        self._details: RequestDetails | None = None

    @property
    def details(self) -> RequestDetails:
        """The details of the record last built (``record``)."""
        assert self._details is not None, "no record built yet"
        return self._details

    def record(self, charge: int | None = None) -> RequestRecord:
        """The request's record, charged ``charge`` (by default its whole cost, as in track mode)."""
        self._details = self._charged(self.cost if charge is None else charge)
        return _with_attempts(RequestRecord.completed(self.opened.request_id, self._details), self.attempts)

    def settle(self, account: Account) -> list[Aggregate] | None:
        request_id = self.opened.request_id
        cost = self.cost
        self.refused = None
        deferred = self._deferred_hold(account)
        if deferred == "closed":
            return None  # settled already, by an earlier attempt of this call
        if deferred == "to place":
            self.refused = self.billing._place_deferred(self.opened, account, self.route)
            if self.refused is not None:
                return [RequestRecord.failed(request_id, self.refused[1])]  # as ``record_refusal`` records it
        if request_id.hex in account.holds:
            charged = account.settle_hold(request_id, cost)
        elif self.billing.ledger.find(request_id) is not None:
            return None  # settled already, by an earlier attempt of this call
        else:
            charged = account.charge_without_hold(request_id, cost)  # the hold expired first
        # built now, so its latency is as the caller lives it: up to the settlement, after any wait for the writer
        return [self.record(charged)]

    def receipt(self, recorded_now: bool) -> Receipt:
        """The receipt of this settlement, or of the earlier one when this found it done already."""
        if not recorded_now:
            return self.billing.receipt_of(self.opened.request_id)
        return Receipt(
            request_id=self.opened.request_id,
            charge=self.details.charge,
            cost=self.details.cost,
            uncollected=self.details.uncollected,
            price_book_version=self.opened.price_book_version,
            priced=self.priced,
            usage=self.usage,
        )


class _Release(_ClosingChange):
    """Failing one request: ``release`` is the account change (the hold back, the failure recorded)."""

    def __init__(
        self,
        billing: RequestBilling,
        opened: OpenedRequest,
        details: RequestDetails,
        reason: str,
        attempts: tuple[Attempt, ...],
    ) -> None:
        super().__init__(billing, opened)
        self.details, self.reason, self.attempts = details, reason, attempts

    def record(self) -> RequestRecord:
        return _with_attempts(RequestRecord.failed(self.opened.request_id, self.details), self.attempts)

    def __call__(self, account: Account) -> list[Aggregate] | None:
        request_id = self.opened.request_id
        deferred = self._deferred_hold(account)
        if deferred == "closed":
            return None  # recorded already
        if deferred == "to place":
            # placed and released at once, the events of a hold saved first; none if it would not fit now
            if self.billing._place_deferred(self.opened, account, None) is None:
                account.release_hold(request_id, reason=self.reason)
            return [self.record()]
        if request_id.hex in account.holds:
            account.release_hold(request_id, reason=self.reason)
        elif self.billing.ledger.find(request_id) is not None:
            return None  # recorded already
        return [self.record()]  # built afresh on every attempt: a refused save drains its events


def _release_reservation(opened: OpenedRequest) -> None:
    """The backstop once a closing change is answered: its deferred hold reserves nothing more
    (the change released it when it ran; this covers one that never ran)."""
    if opened.deferred_hold is not None:
        opened.deferred_hold.release()


def _elapsed_ms(opened: OpenedRequest) -> float:
    return round((time.monotonic() - opened.started) * 1000, 3)


def _with_attempts(record: RequestRecord, attempts: tuple[Attempt, ...]) -> RequestRecord:
    for attempt in attempts:
        record.attempt_failed(
            FailedAttempt(
                model=attempt.route.model,
                provider=attempt.route.provider,
                credential_id=attempt.route.credential_id,
                status=attempt.status,
                error_code=attempt.error_code,
                latency_ms=attempt.latency_ms,
                retry=attempt.retry,
            )
        )
    return record


__all__ = ["Attempt", "OpenedRequest", "Receipt", "RequestBilling", "RequestShape", "Route", "Target"]
