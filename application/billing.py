"""The life of one billed request: open (authenticate, route, price, hold), then
complete (settle and record) or fail (release and record).

Invariants:
- in credits mode no upstream call starts without a durable hold that covers the
  worst case, and the hold is closed exactly once: settled with the record of a
  completed request, or released with the record of a failed one, in one
  transaction each;
- a request is recorded at most once (the record's id is the request id);
- an upstream failure is never charged.
"""

import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from application.ledger import Ledger
from application.routing import Route, Router, Target
from domain.account import Account
from domain.errors import InsufficientCredits, ModelNotFound
from domain.pricing import price_usage, provider_cost_of, worst_case_usage
from domain.request_record import RequestRecord
from domain.spend_caps import SpendCapReached
from domain.usage import Usage

BillingMode = Literal["track", "credits"]


@dataclass(frozen=True)
class RequestShape:
    """What the hold estimate needs to know about a request."""

    model: str
    prompt_bytes: int
    max_output_tokens: int | None
    choices: int
    stream: bool
    endpoint: str = "chat.completions"
    images: int = 0  # images asked for (image generation)


@dataclass(frozen=True)
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


class RequestBilling:
    def __init__(self, ledger: Ledger, router: Router, *, mode: BillingMode, hold_ttl: timedelta) -> None:
        self.ledger = ledger
        self.router = router
        self.mode = mode
        self.hold_ttl = hold_ttl

    def open_request(self, api_key: str, shape: RequestShape, request_id: UUID | None = None) -> OpenedRequest:
        """Authenticate, route and price the request, and in credits mode hold its worst case.

        Raises AuthenticationFailed, PermissionDenied (a model the key may not use),
        ModelNotFound, InsufficientCredits, SpendCapReached.
        """
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
                raise ModelNotFound(f"the model {shape.model!r} has no price, so it cannot be sold; ask the operator to set one")
        opened = OpenedRequest(
            request_id=request_id,
            account_id=key.account_id,
            api_key_id=key.id,
            shape=shape,
            targets=tuple(targets),
            price_book_version=book.number,
            hold=0,
            started=started,
            started_at=now,
        )
        if self.mode == "credits":
            opened = replace(opened, hold=max(self._worst_case(shape, target) for target in targets))
            try:
                self._place_hold(opened)
            except (InsufficientCredits, SpendCapReached) as refused:
                status = 402 if isinstance(refused, InsufficientCredits) else 429
                self._record(RequestRecord.failed(request_id, **self._details(opened, None, status=status,
                                                                              error_code=refused.code)))
                raise
        return opened

    def complete_request(self, opened: OpenedRequest, route: Route, usage: Usage, *, status: int = 200,
                         ttfb_ms: float | None = None, attempts: tuple[Attempt, ...] = (),
                         error_code: str | None = None) -> Receipt:
        """Charge for what ``route`` served (settling the hold) and record the request, once.

        ``error_code`` names what cut a partly served request short (a broken stream)."""
        price = self._target_of(opened, route).price
        cost = price_usage(price, usage) if price is not None else 0
        outcome = {"charge": cost, "uncollected": 0}

        def record() -> RequestRecord:
            details = self._details(opened, route, status=status, usage=usage, cost=cost, ttfb_ms=ttfb_ms,
                                    error_code=error_code, **outcome)
            details["provider_cost"] = provider_cost_of(price, usage)
            return _with_attempts(RequestRecord.completed(opened.request_id, **details), attempts)

        def settle(account: Account) -> list[Aggregate] | None:
            if opened.request_id.hex in account.holds:
                charged = account.settle_hold(opened.request_id, cost)
            elif self.ledger.find(opened.request_id) is not None:
                return None  # settled already, by an earlier attempt of this call
            else:
                charged = account.charge_without_hold(opened.request_id, cost)  # the hold expired first
            outcome.update(charge=charged, uncollected=cost - charged)
            return [record()]

        if self.mode == "credits":
            if not self.ledger.change_account(opened.account_id, settle):
                return self._receipt_of(opened.request_id)
        else:
            self._record(record())
        return Receipt(
            request_id=opened.request_id,
            charge=outcome["charge"],
            cost=cost,
            uncollected=outcome["uncollected"],
            price_book_version=opened.price_book_version,
            priced=price is not None,
            usage=usage,
        )

    def fail_request(self, opened: OpenedRequest, *, status: int, error_code: str, route: Route | None = None,
                     ttfb_ms: float | None = None, attempts: tuple[Attempt, ...] = ()) -> None:
        """Release the hold without charging and record the failure, once."""
        details = self._details(opened, route, status=status, error_code=error_code, ttfb_ms=ttfb_ms)

        def record() -> RequestRecord:
            return _with_attempts(RequestRecord.failed(opened.request_id, **details), attempts)

        def release(account: Account) -> list[Aggregate] | None:
            if opened.request_id.hex in account.holds:
                account.release_hold(opened.request_id, reason=error_code)
            elif self.ledger.find(opened.request_id) is not None:
                return None  # recorded already
            return [record()]  # built afresh on every attempt: a refused save drains its events

        if self.mode == "credits":
            self.ledger.change_account(opened.account_id, release)
        else:
            self._record(record())

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

    def _place_hold(self, opened: OpenedRequest) -> None:
        expires_at = opened.started_at + self.hold_ttl

        def hold(account: Account) -> list[Aggregate]:
            account.place_hold(opened.request_id, opened.hold, expires_at, api_key_id=opened.api_key_id,
                               now=opened.started_at)
            return []

        self.ledger.change_account(opened.account_id, hold)

    def _record(self, record: RequestRecord) -> None:
        try:
            self.ledger.save(record)
        except IntegrityError:
            pass  # recorded already: a request is recorded at most once

    def _receipt_of(self, request_id: UUID) -> Receipt:
        details = self.ledger.find(request_id).details
        return Receipt(
            request_id=request_id,
            charge=details["charge"],
            cost=details["cost"],
            uncollected=details.get("uncollected", 0),
            price_book_version=details["price_book_version"],
            priced=details["priced"],
            usage=Usage.from_dict(details["usage"]),
        )

    def _details(self, opened: OpenedRequest, route: Route | None, *, status: int, usage: Usage | None = None,
                 cost: int = 0, charge: int = 0, uncollected: int = 0, error_code: str | None = None,
                 ttfb_ms: float | None = None) -> dict[str, Any]:
        target = self._target_of(opened, route) if route else opened.targets[0]
        return {
            "account_id": opened.account_id.hex,
            "api_key_id": opened.api_key_id.hex,
            "requested_model": opened.shape.model,
            "model": target.model,
            "provider": target.provider.name,
            "upstream_model": target.upstream_model,
            "credential_id": route.credential_id if route else None,
            "endpoint": opened.shape.endpoint,
            "stream": opened.shape.stream,
            "status": status,
            "error_code": error_code,
            "usage": usage.to_dict() if usage else None,
            "charge": charge,
            "cost": cost,
            "uncollected": uncollected,
            "hold": opened.hold,
            "price_book_version": opened.price_book_version,
            "priced": target.price is not None,
            "latency_ms": round((time.monotonic() - opened.started) * 1000, 3),
            "ttfb_ms": ttfb_ms,
            "started_at": opened.started_at.isoformat(),
        }


def _with_attempts(record: RequestRecord, attempts: tuple[Attempt, ...]) -> RequestRecord:
    for attempt in attempts:
        record.attempt_failed(
            model=attempt.route.model,
            provider=attempt.route.provider,
            credential_id=attempt.route.credential_id,
            status=attempt.status,
            error_code=attempt.error_code,
            latency_ms=attempt.latency_ms,
        )
    return record


__all__ = ["Attempt", "OpenedRequest", "Receipt", "RequestBilling", "RequestShape", "Route", "Target"]
