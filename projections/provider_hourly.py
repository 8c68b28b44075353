"""Provider rollups per UTC hour, provider, credential and model: what each credential
served, what it was charged for, what the provider charges for it, and how often it failed.

Invariants kept here:
- every ``RequestRecord.Completed``/``Failed`` event lands in exactly one bucket: the UTC
  hour of its timestamp, under the provider, credential and model the record names
  (``requests``, ``completed``, ``failed``, ``charged``, ``cost``, ``provider_cost``,
  ``provider_cost_unknown``, ``estimated``, ``estimated_charged``);
- every ``RequestRecord.AttemptFailed`` event counts once in ``failed_attempts`` of the
  bucket of *its own* hour, provider, credential and model (the attempt's, not the
  serving route's);
- a completed record with at least one failed attempt counts once in ``failovers`` of
  the bucket its ``Completed`` event landed in. It is counted at the record's first
  ``AttemptFailed`` (version 2): when the ``Completed`` event was in an earlier batch,
  it is read back from the event store — at most one such read per batch, because a
  record's events are consecutive notifications;
- money is integer nanocredits: ``charged`` sums ``charge``, ``cost`` the list price,
  ``provider_cost`` the known provider costs only, and ``provider_cost_unknown`` counts
  the completed requests without one (no provider-cost rates for the model), so a margin
  ``charged - provider_cost`` is exact where that count is zero;
- the counters are additive, so any split of the history into batches (live, or a
  rebuild from zero) ends in identical rows (the sums are projections/hourly.py's).
A missing credential (a request refused before any upstream call) is stored as ``''``
and read back as ``None``. Whole UTC days are sums of hours (``sum_by_day``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.utils import get_topic

from domain.request_record import FailedAttempt, RequestRecord
from projections.hourly import Counts, MemoryBuckets, SqlBuckets, counter_names, hours_of, summed
from projections.memory import InMemoryStore, MemoryTransaction
from projections.store import SqlStore, SqlTransaction

PROVIDER_TABLE = "th_rm_provider_hourly"

ProviderKey = tuple[datetime, str, str, str]  # hour, provider, credential id ('' if none), model
KEY_COLUMNS = ("hour", "provider", "credential_id", "model")
FirstEvent = Callable[[UUID], DomainEventProtocol[Any]]  # a request record's Completed or Failed event


@dataclass
class ProviderCounts(Counts):
    requests: int = 0
    completed: int = 0
    failed: int = 0
    charged: int = 0
    cost: int = 0
    provider_cost: int = 0
    provider_cost_unknown: int = 0
    estimated: int = 0
    estimated_charged: int = 0
    failed_attempts: int = 0
    failovers: int = 0

    @property
    def margin(self) -> int:
        """Charged minus the known provider cost (exact only when ``provider_cost_unknown`` is 0)."""
        return self.charged - self.provider_cost


COUNTERS = counter_names(ProviderCounts)


@dataclass(frozen=True)
class ProviderHourRow:
    hour: datetime
    provider: str
    credential_id: str | None
    model: str
    requests: int
    completed: int
    failed: int
    charged: int
    cost: int
    provider_cost: int
    provider_cost_unknown: int
    estimated: int
    estimated_charged: int
    failed_attempts: int
    failovers: int

    @property
    def counts(self) -> ProviderCounts:
        return ProviderCounts(*(getattr(self, name) for name in COUNTERS))


@dataclass(frozen=True)
class ProviderDayRow:
    day: date
    provider: str
    credential_id: str | None
    model: str
    counts: ProviderCounts


def _key(hour: datetime, found: FailedAttempt) -> ProviderKey:
    return hour, found.provider, found.credential_id or "", found.model


def _record_key(hour: datetime, details: dict[str, Any]) -> ProviderKey:
    """A record's bucket, each value as ``record_facts`` reads it (domain/request_record.py)."""
    get = details.get
    return hour, str(get("provider") or ""), get("credential_id") or "", str(get("model") or "")


def _record_row(details: dict[str, Any]) -> tuple[int, ...]:
    """What one recorded request adds to its bucket, in ``ProviderCounts``' field order; each
    value as ``record_facts`` reads it (tests/property/test_rollup_folds.py checks the two agree)."""
    get = details.get
    charge = int(get("charge") or 0)
    cost = int(get("cost") or 0)
    if get("outcome") != "completed":
        return (1, 0, 1, charge, cost, 0, 0, 0, 0, 0, 0)
    provider_cost = get("provider_cost")
    usage = get("usage")
    estimated = usage is not None and usage.get("source", "provider") == "estimated"
    return (
        1,
        1,
        0,
        charge,
        cost,
        int(provider_cost or 0),
        int(provider_cost is None),
        int(estimated),
        charge if estimated else 0,
        0,
        0,
    )


_FAILED_ATTEMPT = (0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0)  # failed_attempts
_FAILOVER = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1)  # failovers


def fold_providers(
    events: Iterable[DomainEventProtocol[Any]], first_event: FirstEvent
) -> dict[ProviderKey, ProviderCounts]:
    """The batch's buckets: each event adds one row of counters to its key's."""
    rows: dict[ProviderKey, list[tuple[int, ...]]] = {}
    created: dict[UUID, DomainEventProtocol[Any]] = {}  # the records begun in this batch
    hour = hours_of()

    def add(key: ProviderKey, row: tuple[int, ...]) -> None:
        found = rows.get(key)
        if found is None:
            rows[key] = [row]
        else:
            found.append(row)

    for event in events:
        if isinstance(event, RequestRecord.AttemptFailed):
            add(_key(hour(event.timestamp), FailedAttempt.from_dict(event.attempt)), _FAILED_ATTEMPT)
            if event.originator_version == 2:  # the record's first failed attempt
                record = created.get(event.originator_id)
                if record is None:
                    record = first_event(event.originator_id)
                if isinstance(record, RequestRecord.Completed):
                    add(_record_key(hour(record.timestamp), record.details), _FAILOVER)
        else:
            assert isinstance(event, (RequestRecord.Completed, RequestRecord.Failed))
            details = event.details
            created[event.originator_id] = event
            add(_record_key(hour(event.timestamp), details), _record_row(details))
    return summed(rows, ProviderCounts)


def first_events_of(app: Application[Any]) -> FirstEvent:
    """Reads a request record's first event (version 1) back from ``app``'s event store."""

    def first_event(request_id: UUID) -> DomainEventProtocol[Any]:
        (stored,) = app.recorder.select_events(request_id, lte=1)
        return app.mapper.to_domain_event(stored)

    return first_event


def sum_by_day(rows: Iterable[ProviderHourRow]) -> list[ProviderDayRow]:
    """The hourly rows summed per UTC day, provider, credential and model, in that order."""
    days: dict[tuple[date, str, str, str], ProviderCounts] = {}
    for row in rows:
        key = (row.hour.astimezone(UTC).date(), row.provider, row.credential_id or "", row.model)
        days.setdefault(key, ProviderCounts()).add(row.counts)
    return [
        ProviderDayRow(day, provider, credential or None, model, counts)
        for (day, provider, credential, model), counts in sorted(days.items())
    ]


def _row(key: ProviderKey, counts: ProviderCounts) -> ProviderHourRow:
    hour, provider, credential, model = key
    return ProviderHourRow(hour, provider, credential or None, model, *counts.values())


def _order(row: ProviderHourRow) -> tuple[datetime, str, str, str]:
    return row.hour, row.provider, row.credential_id or "", row.model


class ProviderHourlyView(Protocol):
    def list_hours(self, since: datetime | None = None, until: datetime | None = None) -> list[ProviderHourRow]:
        """Buckets with ``since <= hour < until``, oldest first (then provider, credential, model)."""

    def get_totals(self, since: datetime | None = None, until: datetime | None = None) -> ProviderCounts: ...

    def apply(self, tx: Any, buckets: dict[ProviderKey, ProviderCounts]) -> None: ...

    def clear(self, tx: Any) -> None: ...


class ProviderHourlyProjection:
    name = "provider_hourly"
    schema_version = 1  # raise it when its tables or rows change: projections/store.py Schema
    topics = frozenset(
        get_topic(cls) for cls in (RequestRecord.Completed, RequestRecord.Failed, RequestRecord.AttemptFailed)
    )

    def __init__(self, view: ProviderHourlyView, first_event: FirstEvent) -> None:
        self.view = view
        self.first_event = first_event

    def process(self, tx: Any, events: list[DomainEventProtocol[Any]]) -> None:
        self.view.apply(tx, fold_providers(events, self.first_event))

    def clear(self, tx: Any) -> None:
        self.view.clear(tx)


class InMemoryProviderHourlyView:
    def __init__(self, store: InMemoryStore) -> None:
        self._buckets: MemoryBuckets[ProviderKey, ProviderCounts] = MemoryBuckets(store, ProviderCounts)

    def list_hours(self, since: datetime | None = None, until: datetime | None = None) -> list[ProviderHourRow]:
        rows = self._buckets.rows(
            lambda key: (since is None or key[0] >= since) and (until is None or key[0] < until), _row
        )
        return sorted(rows, key=_order)

    def get_totals(self, since: datetime | None = None, until: datetime | None = None) -> ProviderCounts:
        total = ProviderCounts()
        for row in self.list_hours(since, until):
            total.add(row.counts)
        return total

    def apply(self, tx: MemoryTransaction, buckets: dict[ProviderKey, ProviderCounts]) -> None:
        self._buckets.apply(tx, buckets)

    def clear(self, tx: MemoryTransaction) -> None:
        self._buckets.clear(tx)


class SqlProviderHourlyView:
    DDL = (
        f"CREATE TABLE IF NOT EXISTS {PROVIDER_TABLE} ("
        " hour TIMESTAMPTZ NOT NULL, provider TEXT NOT NULL, credential_id TEXT NOT NULL, model TEXT NOT NULL,"
        + ", ".join(f" {name} BIGINT NOT NULL" for name in COUNTERS)
        + ", PRIMARY KEY (hour, provider, credential_id, model))",
    )
    TABLES = (PROVIDER_TABLE,)

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self._sums = SqlBuckets(store, PROVIDER_TABLE, KEY_COLUMNS, COUNTERS)

    def list_hours(self, since: datetime | None = None, until: datetime | None = None) -> list[ProviderHourRow]:
        found = self._sums.select(*self._sums.where(since, until))
        rows = (_row(key, ProviderCounts(*counts)) for key, counts in found)
        return sorted(rows, key=_order)  # one order, whatever the collation

    def get_totals(self, since: datetime | None = None, until: datetime | None = None) -> ProviderCounts:
        return ProviderCounts(*self._sums.totals(*self._sums.where(since, until)))

    def apply(self, tx: SqlTransaction, buckets: dict[ProviderKey, ProviderCounts]) -> None:
        self._sums.apply(tx, buckets)

    def clear(self, tx: SqlTransaction) -> None:
        self._sums.clear(tx)
