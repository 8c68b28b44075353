"""Usage rollups per account, API key, provider, model and UTC hour.

Invariants kept here:
- every ``RequestRecord`` event lands in exactly one bucket: the UTC hour of the
  event's timestamp, under the account, key, provider and model it names;
- each counter of a bucket is the exact integer sum over its requests (``requests``
  counts completed and failed, ``failed_requests`` the failed ones, ``estimated_requests``
  those whose usage was estimated rather than reported); ``charge`` and ``cost`` are
  integer nanocredits;
- the counters are additive, so any split of the history into batches (live, or a
  rebuild from zero) ends in identical rows (the sums are projections/hourly.py's).
A missing account or API key is stored as ``''`` in the key and read back as ``None``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.utils import get_topic

from domain.request_record import NO_COUNTS, RecordFacts, RequestRecord
from projections.hourly import Counts, MemoryBuckets, SqlBuckets, counter_names, hours_of, summed
from projections.hourly import hour_of as hour_of  # read from here by the projections' tests
from projections.memory import InMemoryStore, MemoryTransaction
from projections.store import SqlStore, SqlTransaction

USAGE_TABLE = "th_rm_usage_hourly"

UsageKey = tuple[str, str, str, str, datetime]  # account hex, key hex, provider, model, hour
KEY_COLUMNS = ("account_id", "api_key_id", "provider", "model", "hour")


@dataclass
class UsageCounts(Counts):
    requests: int = 0
    failed_requests: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    images: int = 0
    charge: int = 0
    cost: int = 0
    estimated_requests: int = 0


COUNTERS = counter_names(UsageCounts)


@dataclass(frozen=True)
class UsageRow:
    account_id: UUID | None
    api_key_id: UUID | None
    provider: str
    model: str
    hour: datetime
    requests: int
    failed_requests: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    reasoning_tokens: int
    images: int
    charge: int
    cost: int
    estimated_requests: int

    @property
    def counts(self) -> UsageCounts:
        return UsageCounts(*(getattr(self, name) for name in COUNTERS))


def counts_of(facts: RecordFacts) -> UsageCounts:
    """What one record adds to its bucket, from its ``record_facts`` (``fold_usage`` reads the
    same values straight from the stored details)."""
    input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, images = facts.counts or NO_COUNTS
    return UsageCounts(
        requests=1,
        failed_requests=int(not facts.succeeded),
        input_tokens=input_tokens,
        cached_input_tokens=cached_input_tokens,
        output_tokens=output_tokens,
        reasoning_tokens=reasoning_tokens,
        images=images,
        charge=facts.charge,
        cost=facts.cost,
        estimated_requests=int(facts.source == "estimated"),
    )


def fold_usage(events: Iterable[DomainEventProtocol[Any]]) -> dict[UsageKey, UsageCounts]:
    """The batch's buckets. Each record is read straight from its stored ``details``, each
    value as ``record_facts`` reads it (domain/request_record.py; tests/property/
    test_rollup_folds.py checks the two agree), and adds one row of counters to its key's."""
    rows: dict[UsageKey, list[tuple[int, ...]]] = {}
    hour = hours_of()
    for event in events:
        assert isinstance(event, (RequestRecord.Completed, RequestRecord.Failed))
        get = event.details.get
        usage = get("usage")
        if usage is None:
            counts, estimated = NO_COUNTS, 0
        else:  # a count or source not stored is Usage's default
            uget = usage.get
            counts = (
                uget("input_tokens", 0),
                uget("cached_input_tokens", 0),
                uget("output_tokens", 0),
                uget("reasoning_tokens", 0),
                uget("images", 0),
            )
            estimated = int(uget("source", "provider") == "estimated")
        key = (
            get("account_id") or "",
            get("api_key_id") or "",
            str(get("provider") or ""),
            str(get("model") or ""),
            hour(event.timestamp),
        )
        # in UsageCounts' field order: requests, failed_requests, the five counts, charge, cost, estimated_requests
        row = (
            1,
            int(get("outcome") != "completed"),
            *counts,
            int(get("charge") or 0),
            int(get("cost") or 0),
            estimated,
        )
        found = rows.get(key)
        if found is None:
            rows[key] = [row]
        else:
            found.append(row)
    return summed(rows, UsageCounts)


def _row(key: UsageKey, counts: UsageCounts) -> UsageRow:
    account, api_key, provider, model, hour = key
    account_uuid, key_uuid = (UUID(x) if x else None for x in (account, api_key))
    return UsageRow(account_uuid, key_uuid, provider, model, hour, *counts.values())


class UsageView(Protocol):
    def list_usage(
        self, account_id: UUID | None = None, since: datetime | None = None, until: datetime | None = None
    ) -> list[UsageRow]:
        """Buckets with ``since <= hour < until``, oldest first."""

    def get_usage_totals(
        self, account_id: UUID | None = None, since: datetime | None = None, until: datetime | None = None
    ) -> UsageCounts: ...

    def apply(self, tx: Any, buckets: dict[UsageKey, UsageCounts]) -> None: ...

    def clear(self, tx: Any) -> None: ...


class UsageProjection:
    name = "usage"
    schema_version = 1  # raise it when its tables or rows change: projections/store.py Schema
    topics = frozenset(get_topic(cls) for cls in (RequestRecord.Completed, RequestRecord.Failed))

    def __init__(self, view: UsageView) -> None:
        self.view = view

    def process(self, tx: Any, events: list[DomainEventProtocol[Any]]) -> None:
        self.view.apply(tx, fold_usage(events))

    def clear(self, tx: Any) -> None:
        self.view.clear(tx)


class InMemoryUsageView:
    def __init__(self, store: InMemoryStore) -> None:
        self._buckets: MemoryBuckets[UsageKey, UsageCounts] = MemoryBuckets(store, UsageCounts)

    def list_usage(
        self, account_id: UUID | None = None, since: datetime | None = None, until: datetime | None = None
    ) -> list[UsageRow]:
        rows = self._buckets.rows(
            lambda key: (
                (account_id is None or key[0] == account_id.hex)
                and (since is None or key[4] >= since)
                and (until is None or key[4] < until)
            ),
            _row,
        )
        return sorted(
            rows, key=lambda r: (r.hour, *(str(x) for x in (r.account_id, r.api_key_id)), r.provider, r.model)
        )

    def get_usage_totals(
        self, account_id: UUID | None = None, since: datetime | None = None, until: datetime | None = None
    ) -> UsageCounts:
        total = UsageCounts()
        for row in self.list_usage(account_id, since, until):
            total.add(row.counts)
        return total

    def apply(self, tx: MemoryTransaction, buckets: dict[UsageKey, UsageCounts]) -> None:
        self._buckets.apply(tx, buckets)

    def clear(self, tx: MemoryTransaction) -> None:
        self._buckets.clear(tx)


class SqlUsageView:
    DDL = (
        f"CREATE TABLE IF NOT EXISTS {USAGE_TABLE} ("
        " account_id TEXT NOT NULL, api_key_id TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL,"
        " hour TIMESTAMPTZ NOT NULL,"
        + ", ".join(f" {name} BIGINT NOT NULL" for name in COUNTERS)
        + ", PRIMARY KEY (account_id, api_key_id, provider, model, hour))",
        f"CREATE INDEX IF NOT EXISTS {USAGE_TABLE}_hour ON {USAGE_TABLE} (hour)",
    )
    TABLES = (USAGE_TABLE,)

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self._sums = SqlBuckets(store, USAGE_TABLE, KEY_COLUMNS, COUNTERS)

    def list_usage(
        self, account_id: UUID | None = None, since: datetime | None = None, until: datetime | None = None
    ) -> list[UsageRow]:
        where, params = self._where(account_id, since, until)
        found = self._sums.select(where, params, order="hour, account_id, api_key_id, provider, model")
        return [_row(key, UsageCounts(*counts)) for key, counts in found]

    def get_usage_totals(
        self, account_id: UUID | None = None, since: datetime | None = None, until: datetime | None = None
    ) -> UsageCounts:
        return UsageCounts(*self._sums.totals(*self._where(account_id, since, until)))

    def apply(self, tx: SqlTransaction, buckets: dict[UsageKey, UsageCounts]) -> None:
        self._sums.apply(tx, buckets)

    def clear(self, tx: SqlTransaction) -> None:
        self._sums.clear(tx)

    def _where(self, account_id: UUID | None, since: datetime | None, until: datetime | None) -> tuple[str, list[Any]]:
        return self._sums.where(since, until, [("account_id", account_id.hex if account_id else None)])
