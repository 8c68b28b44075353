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

import random
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from application.ledger import Ledger
from domain.account import Account
from domain.errors import InsufficientCredits, ModelNotFound, UpstreamError
from domain.pricing import ModelPrice, price_usage, worst_case_usage
from domain.request_record import RequestRecord
from domain.usage import Usage

BillingMode = Literal["track", "credits"]


@dataclass(frozen=True)
class Route:
    """Where a request goes: a provider, the model name it knows, one credential."""

    provider: str
    kind: str
    base_url: str | None
    region: str | None
    upstream_model: str
    credential_id: str | None
    secret: str | None = field(repr=False)


@dataclass(frozen=True)
class RequestShape:
    """What the hold estimate needs to know about a request."""

    model: str
    prompt_bytes: int
    max_output_tokens: int | None
    choices: int
    stream: bool
    endpoint: str = "chat.completions"


@dataclass(frozen=True)
class OpenedRequest:
    request_id: UUID
    account_id: UUID
    api_key_id: UUID
    shape: RequestShape
    route: Route
    price: ModelPrice | None
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


class RequestBilling:
    def __init__(self, ledger: Ledger, *, mode: BillingMode, hold_ttl: timedelta) -> None:
        self.ledger = ledger
        self.mode = mode
        self.hold_ttl = hold_ttl

    def open_request(self, api_key: str, shape: RequestShape, request_id: UUID | None = None) -> OpenedRequest:
        """Authenticate, route and price the request, and in credits mode hold its worst case.

        Raises AuthenticationFailed, ModelNotFound, InsufficientCredits, UpstreamError(503).
        """
        started = time.monotonic()
        request_id = request_id or uuid4()
        key = self.ledger.authenticate(api_key)
        route = self.resolve(shape.model)
        book = self.ledger.price_book()
        price = book.price_for(shape.model)
        if price is None and self.mode == "credits":
            raise ModelNotFound(f"the model {shape.model!r} has no price, so it cannot be sold; ask the operator to set one")
        hold = 0
        opened = OpenedRequest(
            request_id=request_id,
            account_id=key.account_id,
            api_key_id=key.id,
            shape=shape,
            route=route,
            price=price,
            price_book_version=book.current_version,
            hold=0,
            started=started,
            started_at=self.ledger.clock.now(),
        )
        if self.mode == "credits":
            assert price is not None
            hold = price_usage(price, worst_case_usage(shape.prompt_bytes, shape.max_output_tokens, shape.choices, price))
            opened = replace(opened, hold=hold)
            try:
                self._place_hold(opened)
            except InsufficientCredits:
                self._record(RequestRecord.failed(request_id, **self._details(opened, status=402, error_code="insufficient_credits")))
                raise
        return opened

    def resolve(self, model: str) -> Route:
        provider_name, _, upstream_model = model.partition("/")
        if not provider_name or not upstream_model:
            raise ModelNotFound(f"the model {model!r} does not exist; model ids are PROVIDER/MODEL")
        provider = self.ledger.find_provider(provider_name)
        if provider is None or not provider.enabled:
            raise ModelNotFound(f"the model {model!r} does not exist or you do not have access to it")
        credentials = provider.usable_credentials()
        if not credentials:
            if provider.credentials:
                raise UpstreamError(f"provider {provider_name!r} has no usable credential", status=503, code="no_usable_credential")
            return Route(provider.name, provider.kind, provider.base_url, provider.region, upstream_model, None, None)
        credential = random.choices(credentials, weights=[c["weight"] for c in credentials])[0]
        return Route(
            provider=provider.name,
            kind=provider.kind,
            base_url=provider.base_url,
            region=provider.region,
            upstream_model=upstream_model,
            credential_id=credential["credential_id"],
            secret=self.ledger.open_credential(provider, credential),
        )

    def complete_request(self, opened: OpenedRequest, usage: Usage, *, status: int = 200, ttfb_ms: float | None = None) -> Receipt:
        """Charge for what was used (settling the hold) and record the request, once."""
        priced = opened.price is not None
        cost = price_usage(opened.price, usage) if opened.price is not None else 0
        outcome = {"charge": cost, "uncollected": 0}

        def settle(account: Account) -> list[Aggregate] | None:
            if opened.request_id.hex in account.holds:
                charged = account.settle_hold(opened.request_id, cost)
            elif self.ledger.find(opened.request_id) is not None:
                return None  # settled already, by an earlier attempt of this call
            else:
                charged = account.charge_without_hold(opened.request_id, cost)  # the hold expired first
            outcome.update(charge=charged, uncollected=cost - charged)
            details = self._details(opened, status=status, usage=usage, cost=cost, ttfb_ms=ttfb_ms, **outcome)
            return [RequestRecord.completed(opened.request_id, **details)]

        if self.mode == "credits":
            if not self.ledger.change_account(opened.account_id, settle):
                return self._receipt_of(opened.request_id)
        else:
            self._record(RequestRecord.completed(opened.request_id, **self._details(opened, status=status, usage=usage, cost=cost, ttfb_ms=ttfb_ms, **outcome)))
        return Receipt(
            request_id=opened.request_id,
            charge=outcome["charge"],
            cost=cost,
            uncollected=outcome["uncollected"],
            price_book_version=opened.price_book_version,
            priced=priced,
            usage=usage,
        )

    def fail_request(self, opened: OpenedRequest, *, status: int, error_code: str, ttfb_ms: float | None = None) -> None:
        """Release the hold without charging and record the failure, once."""
        record = RequestRecord.failed(opened.request_id, **self._details(opened, status=status, error_code=error_code, ttfb_ms=ttfb_ms))

        def release(account: Account) -> list[Aggregate] | None:
            if opened.request_id.hex in account.holds:
                account.release_hold(opened.request_id, reason=error_code)
            elif self.ledger.find(opened.request_id) is not None:
                return None  # recorded already
            return [record]

        if self.mode == "credits":
            self.ledger.change_account(opened.account_id, release)
        else:
            self._record(record)

    def _place_hold(self, opened: OpenedRequest) -> None:
        expires_at = opened.started_at + self.hold_ttl

        def hold(account: Account) -> list[Aggregate]:
            account.place_hold(opened.request_id, opened.hold, expires_at)
            return []

        self.ledger.change_account(opened.account_id, hold)

    def _record(self, record: RequestRecord) -> None:
        try:
            self.ledger.save(record)
        except IntegrityError:
            pass  # recorded already: a request is recorded at most once

    def _receipt_of(self, request_id: UUID) -> Receipt:
        record = self.ledger.find(request_id)
        details = record.details
        return Receipt(
            request_id=request_id,
            charge=details["charge"],
            cost=details["cost"],
            uncollected=details.get("uncollected", 0),
            price_book_version=details["price_book_version"],
            priced=details["priced"],
            usage=Usage.from_dict(details["usage"]),
        )

    def _details(self, opened: OpenedRequest, *, status: int, usage: Usage | None = None, cost: int = 0,
                 charge: int = 0, uncollected: int = 0, error_code: str | None = None,
                 ttfb_ms: float | None = None) -> dict[str, Any]:
        return {
            "account_id": opened.account_id.hex,
            "api_key_id": opened.api_key_id.hex,
            "provider": opened.route.provider,
            "model": opened.shape.model,
            "upstream_model": opened.route.upstream_model,
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
            "priced": opened.price is not None,
            "latency_ms": round((time.monotonic() - opened.started) * 1000, 3),
            "ttfb_ms": ttfb_ms,
            "credential_id": opened.route.credential_id,
            "started_at": opened.started_at.isoformat(),
        }
