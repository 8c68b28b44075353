"""projections/hourly.py's bucket arithmetic against the code it replaced (kept below as the
reference): ``hour_of`` gives the same hour for any aware timestamp, in any offset; adding any
records' counts into buckets with ``add_to`` (a new bucket takes the counts handed to it) ends
in the same buckets as starting each bucket at zero and adding; ``Counts.values`` is
``astuple``; and the in-memory view never keeps a batch's counts objects as its buckets."""

from dataclasses import astuple, fields
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from projections.hourly import Counts, MemoryBuckets, add_to, hour_of
from projections.memory import InMemoryStore
from projections.provider_hourly import ProviderCounts
from projections.usage import UsageCounts


def old_hour_of(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def old_add(bucket: Counts, other: Counts) -> None:
    for f in fields(bucket):
        setattr(bucket, f.name, getattr(bucket, f.name) + getattr(other, f.name))


def old_add_to(buckets: dict[Any, Counts], key: Any, counts: Counts, zero: Any) -> None:
    bucket = buckets.get(key)
    if bucket is None:
        bucket = buckets[key] = zero()
    old_add(bucket, counts)


offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
stamps = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(9998, 12, 30), timezones=st.just(UTC) | offsets
)
counters = st.integers(-(10**18), 10**18)
kinds = st.sampled_from((UsageCounts, ProviderCounts))


@st.composite
def records(draw: st.DrawFn, kind: type[Counts]) -> tuple[tuple[str, datetime], Counts]:
    key = (draw(st.sampled_from("abc")), draw(stamps))
    return key, kind(*(draw(counters) for _ in fields(kind)))


@given(stamps)
def test_hour_of_is_the_old_hour_for_any_aware_timestamp(at: datetime) -> None:
    hour = hour_of(at)
    assert hour == old_hour_of(at)
    assert hour.tzinfo is UTC and type(hour) is datetime  # (``fold``, meaningless in UTC, is 0 now)


@given(st.data(), kinds)
def test_any_records_add_into_the_same_buckets_as_the_old_code(data: st.DataObject, kind: type[Counts]) -> None:
    batch = data.draw(st.lists(records(kind), max_size=30))
    expected: dict[Any, Counts] = {}
    for (name, at), counts in batch:
        old_add_to(expected, (name, old_hour_of(at)), counts, kind)
    # add_to is handed counts it may keep, as the rollups' folds hand over fresh counts
    got: dict[Any, Counts] = {}
    for (name, at), counts in batch:
        add_to(got, (name, hour_of(at)), kind(*astuple(counts)))
    assert got == expected


@given(st.data(), kinds)
def test_values_are_astuple(data: st.DataObject, kind: type[Counts]) -> None:
    (_, counts) = data.draw(records(kind))
    assert counts.values() == astuple(counts)


def test_the_memory_view_copies_a_batch_instead_of_keeping_its_counts() -> None:
    store = InMemoryStore()
    view: MemoryBuckets[tuple[str], UsageCounts] = MemoryBuckets(store, UsageCounts)
    batch = {("a",): UsageCounts(requests=1)}
    view._add(batch)
    view._add({("a",): UsageCounts(requests=2)})
    assert batch[("a",)] == UsageCounts(requests=1)
    assert view.rows(lambda key: True, lambda key, counts: counts.requests) == [3]
