"""Keyed hourly sums of counts: what the hourly rollups (projections/usage.py,
projections/provider_hourly.py) share. A rollup names its counters (a ``Counts``
dataclass of integers), its key (text columns and the UTC hour, in its table's column
order) and its table; this module adds counts under keys, in memory or in SQL.

Invariants kept here:
- a bucket's counters are the exact integer sums of everything added under its key;
- adding is commutative and associative, so any split of the history into batches
  (live, or a rebuild from zero) ends in identical buckets;
- a batch's sums are added in the projection's own transaction: in memory when it
  commits, in SQL by ``INSERT … ON CONFLICT (key) DO UPDATE SET c = table.c + excluded.c``;
- ``add_to`` takes ownership of the counts it is given: the first counts under a key
  become that key's bucket (no zero built and added to), so a caller hands over counts it
  made for this one add and never reads or reuses them. The in-memory view's buckets
  outlive a batch, so it copies a batch's sums into them instead;
- ``summed`` is ``add_to`` for a whole batch at once: a fold collects each key's rows of
  counters (plain tuples, in the ``Counts``' field order) and sums each column once.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Self, TypeVar

from projections.memory import InMemoryStore, MemoryTransaction
from projections.store import SqlStore, SqlTransaction

HOUR = "hour"  # the hour's column in every hourly table


@dataclass
class Counts:
    """Integer counters that add up field by field (a rollup subclasses it with its fields)."""

    def add(self, other: Self) -> None:
        for name in counter_names(type(self)):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def values(self) -> tuple[int, ...]:
        """The counters in field order (``dataclasses.astuple`` without its deep copy)."""
        return counter_values(type(self))(self)


C = TypeVar("C", bound=Counts)
K = TypeVar("K", bound=tuple[Any, ...])
R = TypeVar("R")


def hour_of(at: datetime) -> datetime:
    """The UTC hour ``at`` falls in: the bucket of an event stamped ``at``."""
    if at.tzinfo is not UTC:  # events are stamped in UTC already; anything else is converted
        at = at.astimezone(UTC)
    return datetime(at.year, at.month, at.day, at.hour, tzinfo=UTC)


_ONE_HOUR = timedelta(hours=1)


def hours_of() -> Callable[[datetime], datetime]:
    """``hour_of`` for one batch's times: the last hour found is kept, and a time in it (in
    UTC, as events are stamped) is answered without building the hour again."""
    start = end = datetime.min.replace(tzinfo=UTC)

    def hour(at: datetime) -> datetime:
        nonlocal start, end
        if at.tzinfo is UTC and start <= at < end:
            return start
        start = hour_of(at)
        end = start + _ONE_HOUR
        return start

    return hour


_COUNTER_NAMES: dict[type[Counts], tuple[str, ...]] = {}  # fields() rebuilds its answer on every call
_COUNTER_VALUES: dict[type[Counts], Callable[[Any], tuple[int, ...]]] = {}


def counter_names(counts: type[Counts]) -> tuple[str, ...]:
    names = _COUNTER_NAMES.get(counts)
    if names is None:
        names = _COUNTER_NAMES[counts] = tuple(f.name for f in fields(counts))
    return names


def counter_values(counts: type[Counts]) -> Callable[[Any], tuple[int, ...]]:
    """Reads a ``counts``' counters in field order, as a tuple (one C call, not a loop)."""
    read = _COUNTER_VALUES.get(counts)
    if read is None:
        names = counter_names(counts)
        # attrgetter of one name gives the value itself (not a tuple), of none it refuses
        read = operator.attrgetter(*names) if len(names) > 1 else _one_by_one(names)
        _COUNTER_VALUES[counts] = read
    return read


def _one_by_one(names: tuple[str, ...]) -> Callable[[Any], tuple[int, ...]]:
    return lambda counts: tuple(getattr(counts, name) for name in names)


def summed(rows: dict[K, list[tuple[int, ...]]], counts: Callable[..., C]) -> dict[K, C]:
    """Each key's rows of counters (in a ``Counts``' field order) summed column by column
    into one ``counts``: a batch's buckets, the sums ``add_to`` would reach, added once."""
    return {key: counts(*map(sum, zip(*values, strict=True))) for key, values in rows.items()}


def add_to(buckets: dict[K, C], key: K, counts: C) -> None:
    """``counts`` added to the bucket ``key`` of ``buckets``; under a new key ``counts`` itself
    becomes the bucket (the caller hands it over)."""
    bucket = buckets.get(key)
    if bucket is None:
        buckets[key] = counts
    else:
        bucket.add(counts)


class MemoryBuckets(Generic[K, C]):
    """Buckets in a dict, changed only when the projection's transaction commits."""

    def __init__(self, store: InMemoryStore, zero: Callable[[], C]) -> None:
        self._lock = store.lock
        self._zero = zero
        self._buckets: dict[K, C] = {}

    def rows(self, keep: Callable[[K], bool], row: Callable[[K, C], R]) -> list[R]:
        """``row(key, counts)`` of every bucket whose key ``keep`` accepts (read under the lock)."""
        with self._lock:
            return [row(key, counts) for key, counts in self._buckets.items() if keep(key)]

    def apply(self, tx: MemoryTransaction, buckets: dict[K, C]) -> None:
        tx.on_commit(lambda: self._add(buckets))

    def clear(self, tx: MemoryTransaction) -> None:
        tx.on_commit(self._buckets.clear)

    def _add(self, buckets: dict[K, C]) -> None:
        for key, counts in buckets.items():
            bucket = self._buckets.get(key)
            if bucket is None:  # a copy: the batch's counts are not handed over to the view
                bucket = self._buckets[key] = self._zero()
            bucket.add(counts)


class SqlBuckets:
    """Buckets as rows of ``table``: the key columns (``hour`` among them), then the counters."""

    def __init__(self, store: SqlStore, table: str, keys: Sequence[str], counters: Sequence[str]) -> None:
        self.store, self.table = store, table
        self.keys, self.counters = tuple(keys), tuple(counters)
        self._hour = self.keys.index(HOUR)

    def where(
        self, since: datetime | None, until: datetime | None, equal: Iterable[tuple[str, Any]] = ()
    ) -> tuple[str, list[Any]]:
        """A WHERE clause (or ``""``): each ``(column, value)`` of ``equal`` whose value is not None,
        then ``since <= hour < until``."""
        clauses, params = [], []
        for column, value in equal:
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            clauses.append(f"{HOUR} >= ?")
            params.append(self.store.to_db_time(since))
        if until is not None:
            clauses.append(f"{HOUR} < ?")
            params.append(self.store.to_db_time(until))
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    def select(self, where: str, params: list[Any], order: str = "") -> list[tuple[tuple[Any, ...], list[int]]]:
        """``(key, counters)`` of each row, the key's hour a UTC datetime; ``order``: an ORDER BY list."""
        rows = self.store.query(
            f"SELECT {', '.join(self.keys + self.counters)} FROM {self.table}{where}"
            + (f" ORDER BY {order}" if order else ""),
            params,
        )
        found = []
        for row in rows:
            key = list(row[: len(self.keys)])
            key[self._hour] = self.store.from_db_time(key[self._hour])
            found.append((tuple(key), [int(x) for x in row[len(self.keys) :]]))
        return found

    def totals(self, where: str, params: list[Any]) -> list[int]:
        sums = ", ".join(f"CAST(COALESCE(SUM({name}), 0) AS BIGINT)" for name in self.counters)
        (row,) = self.store.query(f"SELECT {sums} FROM {self.table}{where}", params)
        return [int(x) for x in row]

    def apply(self, tx: SqlTransaction, buckets: dict[K, C]) -> None:
        adds = ", ".join(f"{name} = {self.table}.{name} + excluded.{name}" for name in self.counters)
        columns = self.keys + self.counters
        tx.executemany(
            f"INSERT INTO {self.table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            f" ON CONFLICT ({', '.join(self.keys)}) DO UPDATE SET {adds}",
            [self._params(key, counts) for key, counts in buckets.items()],
        )

    def clear(self, tx: SqlTransaction) -> None:
        tx.execute(f"DELETE FROM {self.table}")

    def _params(self, key: tuple[Any, ...], counts: Counts) -> tuple[Any, ...]:
        values = list(key)
        values[self._hour] = self.store.to_db_time(values[self._hour])
        return (*values, *counts.values())
