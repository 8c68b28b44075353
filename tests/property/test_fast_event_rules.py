"""The events made directly (domain/fast_events.py) are the events eventsourcing made: for
any sequence of account commands — holds (with keys, windows and spend caps), settlements,
late charges, releases, grants that expire and are kept by holds, refunds — and any request
record, the commands run with ``trigger``/``create`` and run the way they ran before (the
decorated method called, ``_create`` called) with the same clock give
- the same outcomes (the same domain errors, raised before any event),
- the same stored events: topic, id, version and state, byte for byte,
- the same aggregate (version, times, balance, holds, windows, lots, kept credit) and the
  same snapshot stored,
and the events made directly, stored and loaded, replay to that same aggregate."""

import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import UUID

import eventsourcing.domain as es_domain
from eventsourcing.domain import decorated_funcs
from eventsourcing.persistence import DatetimeAsISO, JSONTranscoder, Mapper, StoredEvent, UUIDAsHex
from hypothesis import given, settings
from hypothesis import strategies as st

import domain.account as account_module
import domain.request_record as record_module
from domain.account import Account
from domain.errors import TallyhubError
from domain.request_record import RequestDetails, RequestRecord
from tests.property.test_record_facts import billed_details

NOW = datetime(2026, 1, 1, 23, 58, tzinfo=UTC)  # holds start on either side of a day window's end
REQUESTS = [UUID(int=n) for n in range(1, 5)]
KEY = UUID(int=100)
KEYS = [None, KEY, UUID(int=101)]


def mapper() -> Mapper[UUID]:
    transcoder = JSONTranscoder()
    transcoder.register(UUIDAsHex())
    transcoder.register(DatetimeAsISO())
    return Mapper(transcoder=transcoder)


def slow_trigger(aggregate: Any, event_class: type[Any], **state: Any) -> None:
    """What the commands did before: call the method ``@event(event_class)`` decorates."""
    getattr(aggregate, decorated_funcs[event_class].__name__)(**state)


def slow_create(aggregate_class: Any, event_class: type[Any], originator_id: UUID, **state: Any) -> Any:
    """What ``RequestRecord._made`` did before."""
    return aggregate_class._create(event_class, id=originator_id, **state)


@contextmanager
def made(directly: bool) -> Iterator[None]:
    """A clock that ticks a microsecond a reading from the same start; ``directly=False``: the
    commands make their events the way they did before."""
    ticks = itertools.count()
    accounts, records = cast(Any, account_module), cast(Any, record_module)
    saved = es_domain.datetime_now_with_tzinfo, accounts.trigger, records.create
    es_domain.datetime_now_with_tzinfo = lambda: NOW + timedelta(microseconds=next(ticks))
    if not directly:
        accounts.trigger, records.create = slow_trigger, slow_create
    try:
        yield
    finally:
        es_domain.datetime_now_with_tzinfo, accounts.trigger, records.create = saved


def stored(events: Sequence[Any]) -> list[tuple[Any, int, str, bytes]]:
    out = []
    for event in events:
        stored_event = mapper().to_stored_event(event)
        out.append(
            (stored_event.originator_id, stored_event.originator_version, stored_event.topic, stored_event.state)
        )
    return out


def state_of(aggregate: Any) -> dict[str, Any]:
    return {key: value for key, value in vars(aggregate).items() if key != "_pending_events"}


Command = tuple[Any, ...]
amounts = st.integers(0, 2_000)
commands: st.SearchStrategy[Command] = st.one_of(
    st.tuples(
        st.just("hold"),
        st.sampled_from(REQUESTS),
        amounts,
        st.sampled_from(KEYS),
        st.integers(0, 5),  # minutes after NOW the request starts (past midnight from 2)
        st.integers(-1, 20),  # minutes it may hold
    ),
    st.tuples(st.just("settle"), st.sampled_from(REQUESTS), amounts),
    st.tuples(st.just("late charge"), st.sampled_from(REQUESTS), amounts),
    st.tuples(st.just("release"), st.sampled_from(REQUESTS), st.sampled_from(("upstream", "expired"))),
    st.tuples(st.just("grant"), st.integers(1, 3_000), st.none() | st.integers(1, 10)),
    st.tuples(st.just("expire"), st.integers(0, 12)),
    st.tuples(st.just("refund"), st.sampled_from(REQUESTS), st.integers(1, 500), st.sampled_from(KEYS)),
    st.tuples(st.just("caps"), st.sampled_from(("account", KEY.hex)), st.none() | amounts, st.none() | amounts),
)


def run(account: Account, command: Command) -> Any:
    at = NOW
    match command:
        case ("hold", request, amount, key, start, ttl):
            at = NOW + timedelta(minutes=start)
            account.place_hold(request, amount, at + timedelta(minutes=ttl), api_key_id=key, now=at)
        case ("settle", request, cost):
            return account.settle_hold(request, cost)
        case ("late charge", request, cost):
            return account.charge_without_hold(request, cost)
        case ("release", request, reason):
            account.release_hold(request, reason)
        case ("grant", amount, minutes):
            expires = None if minutes is None else NOW + timedelta(minutes=minutes)
            account.grant_credits(amount, "promo", expires_at=expires, now=NOW)
        case ("expire", minutes):
            return account.expire_grants(NOW + timedelta(minutes=minutes))
        case ("refund", request, amount, key):
            account.refund_charge(request, amount, "sorry", api_key_id=key, started_at=NOW)
        case ("caps", scope, day, month):
            account.set_spend_caps(scope, day, month)
    return None


def outcomes(account: Account, sequence: list[Command]) -> list[Any]:
    results = []
    for command in sequence:
        try:
            results.append(run(account, command))
        except TallyhubError as refused:
            results.append((type(refused), str(refused)))
    return results


@settings(max_examples=300, deadline=None)
@given(st.lists(commands, max_size=30))
def test_an_accounts_commands_make_and_store_what_they_made_through_eventsourcing(sequence: list[Command]) -> None:
    accounts, results, events, snapshots = [], [], [], []
    for directly in (True, False):
        with made(directly):
            account = Account("acme")
            results.append(outcomes(account, sequence))
            snapshots.append(stored([Account.Snapshot.take(account)]))
            events.append(stored(account.collect_events()))
            accounts.append(account)
    assert results[0] == results[1]
    assert events[0] == events[1]
    assert state_of(accounts[0]) == state_of(accounts[1])
    assert snapshots[0] == snapshots[1]
    replayed = None
    for stored_event in events[0]:
        replayed = cast(Any, mapper().to_domain_event(StoredEvent(*stored_event))).mutate(replayed)
    assert state_of(replayed) == state_of(accounts[0])


def made_record(details: RequestDetails, directly: bool) -> tuple[RequestRecord, list[Any]]:
    make: Callable[[UUID, RequestDetails], RequestRecord]
    make = RequestRecord.completed if details.outcome == "completed" else RequestRecord.failed
    with made(directly):
        record = make(UUID(int=7), details)
    return record, stored(list(record.pending_events))


@settings(max_examples=200, deadline=None)
@given(billed_details())
def test_a_request_record_is_made_and_stored_as_through_eventsourcing(details: RequestDetails) -> None:
    (direct, direct_events), (before, before_events) = made_record(details, True), made_record(details, False)
    assert direct_events == before_events
    assert [type(event) for event in direct.pending_events] == [type(event) for event in before.pending_events]
    assert state_of(direct) == state_of(before)
    assert direct.details == details
    loaded = cast(Any, mapper().to_domain_event(StoredEvent(*direct_events[0]))).mutate(None)
    assert state_of(loaded) | {"_details": details} == state_of(direct)
    assert loaded.details == details
