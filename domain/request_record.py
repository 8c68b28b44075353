"""One event per request that reached a provider (or failed trying).

The record's id is the request id, so a request is recorded — and charged — at
most once: a second record for the same id collides in the event store. A
completed request's record is saved in the same transaction as its settlement.

What a record says is typed (``RequestDetails``, ``FailedAttempt``) but stored as
it always was: the events keep plain JSON objects with the same keys, in the same
order, with the same values (ids as 32 hex digits, money as integer nanocredits,
a clamped request's ``reported_usage`` counts as decimal text), so records written
before the types load unchanged and no event class needed a new version.
``to_dict``/``from_dict`` are that stored form; ``charge_facts`` reads the few
fields replay and verify need straight from a stored event's state, and ``record_facts``
what the read models show of a record, decoded as ``from_dict`` decodes it (three
projections read every request's record: none of them needs its details or usage built).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, cast
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.attribution import Attribution
from domain.fast_events import create
from domain.slots_init import slots_init
from domain.usage import Usage, UsageSource
from domain.usage_bounds import from_reported, reported

Outcome = Literal["completed", "failed"]
# What prices a recorded usage, in ``domain.pricing.price_counts``'s order: the counts of
# domain/usage_bounds.py COUNTS then NEWER_COUNTS, then the service tier.
RecordedCounts = tuple[int, int, int, int, int, int, int, int, str | None]
# What the read models show of a recorded usage: input, cached input, output, reasoning, images.
ShownCounts = tuple[int, int, int, int, int]
NO_COUNTS: ShownCounts = (0, 0, 0, 0, 0)  # what the read models show of a failed request's usage


@slots_init  # built on every request: domain/slots_init.py
@dataclass(frozen=True, slots=True)
class RequestDetails:
    """What a request's record says. Ids are 32 hex digits (``None``: unknown); money is
    integer nanocredits; ``usage`` is ``None`` for a failed request. ``provider_cost`` is
    recorded with every completed request (``None``: no provider-cost rates for the model)
    and never with a failed one; ``reported_usage`` only when the provider reported more
    than the request could have used (the report as it came; ``usage`` is then clamped);
    ``attribution`` only when the caller sent any (domain/attribution.py)."""

    outcome: Outcome
    account_id: str | None
    api_key_id: str | None
    requested_model: str
    model: str
    provider: str
    upstream_model: str
    credential_id: str | None
    endpoint: str
    stream: bool
    status: int
    error_code: str | None
    usage: Usage | None
    charge: int
    cost: int
    uncollected: int
    hold: int
    price_book_version: int | None
    priced: bool
    latency_ms: float
    ttfb_ms: float | None
    started_at: str | None  # ISO 8601, as recorded
    provider_cost: int | None = None
    reported_usage: Usage | None = None
    attribution: Attribution | None = None

    @property
    def succeeded(self) -> bool:
        return self.outcome == "completed"

    @property
    def account_uuid(self) -> UUID | None:
        return UUID(self.account_id) if self.account_id else None

    @property
    def api_key_uuid(self) -> UUID | None:
        return UUID(self.api_key_id) if self.api_key_id else None

    def to_dict(self) -> dict[str, Any]:
        """The stored form: the keys the gateway has always written, in its order."""
        data: dict[str, Any] = {
            "outcome": self.outcome,
            "account_id": self.account_id,
            "api_key_id": self.api_key_id,
            "requested_model": self.requested_model,
            "model": self.model,
            "provider": self.provider,
            "upstream_model": self.upstream_model,
            "credential_id": self.credential_id,
            "endpoint": self.endpoint,
            "stream": self.stream,
            "status": self.status,
            "error_code": self.error_code,
            "usage": self.usage.to_dict() if self.usage is not None else None,
            "charge": self.charge,
            "cost": self.cost,
            "uncollected": self.uncollected,
            "hold": self.hold,
            "price_book_version": self.price_book_version,
            "priced": self.priced,
            "latency_ms": self.latency_ms,
            "ttfb_ms": self.ttfb_ms,
            "started_at": self.started_at,
        }
        if self.outcome == "completed":
            data["provider_cost"] = self.provider_cost
        if self.reported_usage is not None:
            data["reported_usage"] = reported(self.reported_usage)
        if self.attribution is not None:
            data["attribution"] = self.attribution.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RequestDetails":
        """A stored record's details; a key it lacks (records made by hand in tests, or by
        older code) reads as what the read models always took for it."""
        usage = data.get("usage")
        report = data.get("reported_usage")
        ttfb = data.get("ttfb_ms")
        attribution = data.get("attribution")
        return cls(
            outcome="completed" if data.get("outcome") == "completed" else "failed",
            account_id=data.get("account_id") or None,
            api_key_id=data.get("api_key_id") or None,
            requested_model=str(data.get("requested_model") or ""),
            model=str(data.get("model") or ""),
            provider=str(data.get("provider") or ""),
            upstream_model=str(data.get("upstream_model") or ""),
            credential_id=data.get("credential_id") or None,
            endpoint=str(data.get("endpoint") or ""),
            stream=bool(data.get("stream")),
            status=int(data.get("status") or 0),
            error_code=data.get("error_code"),
            usage=Usage.from_dict(usage) if usage is not None else None,
            charge=int(data.get("charge") or 0),
            cost=int(data.get("cost") or 0),
            uncollected=int(data.get("uncollected") or 0),
            hold=int(data.get("hold") or 0),
            price_book_version=data.get("price_book_version"),
            priced=bool(data.get("priced")),
            latency_ms=float(data.get("latency_ms") or 0.0),
            ttfb_ms=None if ttfb is None else float(ttfb),
            started_at=data.get("started_at"),
            provider_cost=data.get("provider_cost"),
            reported_usage=_from_reported(report) if report else None,
            attribution=Attribution.from_dict(attribution) if attribution else None,
        )


def _from_reported(data: Mapping[str, Any]) -> Usage:
    """``reported_usage`` as stored (counts as decimal text) back to a Usage."""
    return from_reported(data)


@dataclass(frozen=True, slots=True)
class FailedAttempt:
    """An upstream attempt that failed before another one served (or failed) the request.
    ``retry``: 0 for the first attempt through its credential, n for the n-th retry of the
    same credential (application/failover_policy.py); stored only when not 0, so a record
    written before retries existed keeps its stored form."""

    model: str
    provider: str
    credential_id: str | None
    status: int
    error_code: str
    latency_ms: float
    retry: int = 0

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "model": self.model,
            "provider": self.provider,
            "credential_id": self.credential_id,
            "status": self.status,
            "error_code": self.error_code,
            "latency_ms": self.latency_ms,
        }
        if self.retry:
            data["retry"] = self.retry
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FailedAttempt":
        return cls(
            model=str(data.get("model") or ""),
            provider=str(data.get("provider") or ""),
            credential_id=data.get("credential_id") or None,
            status=int(data.get("status") or 0),
            error_code=str(data.get("error_code") or ""),
            latency_ms=float(data.get("latency_ms") or 0.0),
            retry=int(data.get("retry") or 0),
        )


class ChargeFacts(NamedTuple):
    """What replay and verify read of a completed record, straight from its stored state."""

    account_id: str
    model: str
    counts: RecordedCounts | None  # None: no usage recorded
    source: str | None
    charge: int
    cost: int
    priced: bool
    price_book_version: int | None

    def usage(self) -> Usage:
        """The counts as a (validated) Usage; only when ``counts`` is not None."""
        assert self.counts is not None
        counts = self.counts
        return Usage(
            *counts[:5],
            source=cast(UsageSource, self.source or "provider"),
            cache_write_5m_tokens=counts[5],
            cache_write_1h_tokens=counts[6],
            web_search_calls=counts[7],
            service_tier=counts[8],
        )


def charge_facts(details: Mapping[str, Any]) -> ChargeFacts:
    """The one decoder of a stored ``details`` object for the readers that skip the
    aggregate (they read every charge ever made: application/replay.py, verify.py)."""
    usage = details.get("usage")
    if usage is None:
        counts, source = None, None
    else:
        counts = (
            usage["input_tokens"],
            usage["cached_input_tokens"],
            usage["output_tokens"],
            usage["reasoning_tokens"],
            usage["images"],
            usage.get("cache_write_5m_tokens", 0),
            usage.get("cache_write_1h_tokens", 0),
            usage.get("web_search_calls", 0),
            usage.get("service_tier"),
        )
        source = usage.get("source")
    return ChargeFacts(  # positional: this runs once per charge in the whole history
        details["account_id"],
        details["model"],
        counts,
        source,
        details["charge"],
        details["cost"],
        bool(details.get("priced")),
        details.get("price_book_version"),
    )


class RecordFacts(NamedTuple):
    """What the read models show of a record (projections/usage.py, provider_hourly.py,
    request_log.py): each field as ``RequestDetails.from_dict`` reads it, but the usage
    kept as its counts and source, not built (``None`` both: no usage)."""

    outcome: Outcome
    account_id: str | None
    api_key_id: str | None
    provider: str
    model: str
    upstream_model: str
    credential_id: str | None
    endpoint: str
    stream: bool
    status: int
    error_code: str | None
    counts: ShownCounts | None
    source: str | None
    charge: int
    cost: int
    price_book_version: int | None
    provider_cost: int | None
    latency_ms: float
    ttfb_ms: float | None
    attribution: Attribution | None

    @property
    def succeeded(self) -> bool:
        return self.outcome == "completed"


def record_facts(details: Mapping[str, Any]) -> RecordFacts:
    """The decoder of a stored ``details`` object for the read models: the same values as
    ``RequestDetails.from_dict`` (a missing key included: tests/property/test_record_facts.py),
    read straight from the stored form, as every projection reads every record."""
    get = details.get
    usage = get("usage")
    if usage is None:
        counts, source = None, None
    else:  # a count or source not stored is Usage's default
        counts = (
            usage.get("input_tokens", 0),
            usage.get("cached_input_tokens", 0),
            usage.get("output_tokens", 0),
            usage.get("reasoning_tokens", 0),
            usage.get("images", 0),
        )
        source = usage.get("source", "provider")
    ttfb = get("ttfb_ms")
    attribution = get("attribution")
    return RecordFacts(  # positional: this runs three times a request
        "completed" if get("outcome") == "completed" else "failed",
        get("account_id") or None,
        get("api_key_id") or None,
        str(get("provider") or ""),
        str(get("model") or ""),
        str(get("upstream_model") or ""),
        get("credential_id") or None,
        str(get("endpoint") or ""),
        bool(get("stream")),
        int(get("status") or 0),
        get("error_code"),
        counts,
        source,
        int(get("charge") or 0),
        int(get("cost") or 0),
        get("price_book_version"),
        get("provider_cost"),
        float(get("latency_ms") or 0.0),
        None if ttfb is None else float(ttfb),
        Attribution.from_dict(attribution) if attribution else None,
    )


class RequestRecord(Aggregate):
    """``details`` is read from the created event's stored form when first asked for (a
    record loaded only to learn that it exists reads nothing); a record just made by
    ``completed`` or ``failed`` keeps the details it was made from, which its stored form
    reads back equal to (tests/property/test_record_facts.py)."""

    class Completed(Aggregate.Created):
        details: dict[str, Any]  # RequestDetails.to_dict()

    class Failed(Aggregate.Created):
        details: dict[str, Any]  # RequestDetails.to_dict()

    class AttemptFailed(Aggregate.Event):
        attempt: dict[str, Any]  # FailedAttempt.to_dict()

    def __init__(self, details: dict[str, Any]) -> None:
        self._stored = details
        self._details: RequestDetails | None = None
        self.attempts: list[FailedAttempt] = []

    @property
    def details(self) -> RequestDetails:
        if self._details is None:
            self._details = RequestDetails.from_dict(self._stored)
        return self._details

    def attempt_failed(self, attempt: FailedAttempt) -> None:
        """An upstream attempt that failed before another one served (or failed) the request."""
        self._attempt_failed(attempt.to_dict())

    @event(AttemptFailed)
    def _attempt_failed(self, attempt: dict[str, Any]) -> None:
        self.attempts.append(FailedAttempt.from_dict(attempt))

    @property
    def succeeded(self) -> bool:
        return self.details.succeeded

    @classmethod
    def completed(cls, request_id: UUID, details: RequestDetails) -> "RequestRecord":
        assert details.outcome == "completed"
        return cls._made(cls.Completed, request_id, details)

    @classmethod
    def failed(cls, request_id: UUID, details: RequestDetails) -> "RequestRecord":
        assert details.outcome == "failed"
        return cls._made(cls.Failed, request_id, details)

    @classmethod
    def _made(cls, created: type[Aggregate.Created], request_id: UUID, details: RequestDetails) -> "RequestRecord":
        # what ``cls._create(created, id=request_id, details=...)`` makes, directly: every request makes one
        record = create(cls, created, request_id, details=details.to_dict())
        record._details = details
        return record
