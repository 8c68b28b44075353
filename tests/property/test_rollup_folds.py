"""The projections' per-event shortcuts against the straightforward code they replaced (kept
below as the reference), for any stored record details (keys missing included), any event
order and any timestamps (UTC or another offset):
- ``fold_usage`` and ``fold_providers`` read each record straight from its stored details and
  sum a batch's rows once per bucket: the buckets equal ``record_facts`` + ``counts_of`` +
  field-by-field adds into buckets keyed by ``hour_of``;
- ``SqliteStore.to_db_time`` keeps the text of the last second: it is
  ``astimezone(UTC).isoformat(timespec="microseconds")`` for any sequence of times;
- the request log's SQL parameters store what the old ``_params`` stored;
- the alert process classifies an event by its class once (``_kind_of``) and reads its state
  key once: the kind is what ``isinstance`` said, the key what the old ``_key_of`` gave."""

from __future__ import annotations

import sqlite3
from dataclasses import fields
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import orjson
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.utils import get_topic
from hypothesis import given, settings
from hypothesis import strategies as st

from application import alerts
from domain.account import Account
from domain.provider import Provider
from domain.request_record import FailedAttempt, RecordFacts, RequestRecord, record_facts
from domain.webhook import WebhookRegistry
from projections.hourly import Counts
from projections.provider_hourly import ProviderCounts, fold_providers
from projections.request_log import COLUMNS, RequestRow, SqlRequestLogView, row_of
from projections.store import SqliteStore
from projections.usage import counts_of, fold_usage

# --- the reference: the code before --------------------------------------------------


def old_hour_of(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def old_add_to(buckets: dict[Any, Counts], key: Any, counts: Counts) -> None:
    bucket = buckets.get(key)
    if bucket is None:
        buckets[key] = counts
        return
    for f in fields(bucket):
        setattr(bucket, f.name, getattr(bucket, f.name) + getattr(counts, f.name))


def old_fold_usage(events: list[Any]) -> dict[Any, Counts]:
    buckets: dict[Any, Counts] = {}
    for event in events:
        facts = record_facts(event.details)
        key = (
            facts.account_id or "",
            facts.api_key_id or "",
            facts.provider,
            facts.model,
            old_hour_of(event.timestamp),
        )
        old_add_to(buckets, key, counts_of(facts))
    return buckets


def old_provider_counts(facts: RecordFacts) -> ProviderCounts:
    completed = facts.succeeded
    estimated = completed and facts.source == "estimated"
    return ProviderCounts(
        requests=1,
        completed=int(completed),
        failed=int(not completed),
        charged=facts.charge,
        cost=facts.cost,
        provider_cost=int(facts.provider_cost or 0) if completed else 0,
        provider_cost_unknown=int(completed and facts.provider_cost is None),
        estimated=int(estimated),
        estimated_charged=facts.charge if estimated else 0,
    )


def old_fold_providers(events: list[Any], first_event: Any) -> dict[Any, Counts]:
    buckets: dict[Any, Counts] = {}

    def key(at: datetime, found: Any) -> Any:
        return old_hour_of(at), found.provider, found.credential_id or "", found.model

    created: dict[UUID, Any] = {}
    for event in events:
        if isinstance(event, RequestRecord.AttemptFailed):
            old_add_to(
                buckets, key(event.timestamp, FailedAttempt.from_dict(event.attempt)), ProviderCounts(failed_attempts=1)
            )
            if event.originator_version == 2:
                record = created.get(event.originator_id) or first_event(event.originator_id)
                if isinstance(record, RequestRecord.Completed):
                    old_add_to(
                        buckets, key(record.timestamp, record_facts(record.details)), ProviderCounts(failovers=1)
                    )
        else:
            facts = record_facts(event.details)
            created[event.originator_id] = event
            old_add_to(buckets, key(event.timestamp, facts), old_provider_counts(facts))
    return buckets


def old_key_of(event: DomainEventProtocol[Any]) -> str | None:
    if isinstance(event, alerts._ACCOUNT_EVENTS):
        return f"account:{event.originator_id.hex}"
    if isinstance(event, alerts._PROVIDER_EVENTS):
        return f"provider:{event.originator_id.hex}"
    if isinstance(event, alerts._RECORD_EVENTS) and alerts._record_matters(event.details):
        account = event.details.get("account_id")
        return f"account:{UUID(account).hex}" if account else None
    return None


def old_request_log_params(row: RequestRow) -> tuple[Any, ...]:
    values = [getattr(row, column) for column in COLUMNS]
    values[0] = row.request_id.hex
    values[1] = row.at.astimezone(UTC).isoformat(timespec="microseconds")
    values[2] = row.account_id.hex if row.account_id else None
    values[3] = row.api_key_id.hex if row.api_key_id else None
    values[COLUMNS.index("tags")] = ",".join(row.tags) if row.tags else None
    values[COLUMNS.index("metadata")] = orjson.dumps(dict(row.metadata)).decode() if row.metadata else None
    return tuple(values)


# --- any stored details, any times ----------------------------------------------------

offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
base = datetime(2026, 12, 7, 22, 59, tzinfo=UTC)
# times near an hour's edge, in UTC mostly (as events are stamped), in other offsets too
stamps = st.builds(
    lambda seconds, micros, tz: (base + timedelta(seconds=seconds, microseconds=micros)).astimezone(tz),
    st.integers(0, 2 * 3600),
    st.integers(0, 999_999),
    st.just(UTC) | st.just(UTC) | offsets,
)
ids = st.none() | st.just("") | st.uuids().map(lambda u: u.hex)
texts = st.none() | st.sampled_from(("", "openai", "mock", "openai/gpt-test"))
money = st.none() | st.integers(0, 10**15)
usage_forms = st.none() | st.fixed_dictionaries(
    {},
    optional={
        "input_tokens": st.integers(0, 10**9),
        "cached_input_tokens": st.integers(0, 10**9),
        "output_tokens": st.integers(0, 10**9),
        "reasoning_tokens": st.integers(0, 10**9),
        "images": st.integers(0, 10),
        "source": st.sampled_from(("provider", "estimated", "clamped")),
    },
)
stored_details = st.fixed_dictionaries(
    {},
    optional={
        "outcome": st.sampled_from(("completed", "failed", "other")),
        "account_id": ids,
        "api_key_id": ids,
        "provider": texts,
        "model": texts,
        "credential_id": ids,
        "usage": usage_forms,
        "charge": money,
        "cost": money,
        "provider_cost": money,
        "priced": st.booleans(),
        "error_code": st.none() | st.sampled_from(("spend_cap_reached", "upstream_error")),
    },
)
attempts = st.fixed_dictionaries(
    {"model": texts, "provider": texts, "credential_id": ids, "status": st.integers(0, 599), "error_code": texts}
)
TOPIC = get_topic(RequestRecord)


@st.composite
def record_histories(draw: st.DrawFn) -> list[Any]:
    """Records (Completed or Failed as their outcome says), some followed by failed attempts
    (versions 2, 3, …), in stream order; timestamps in any order."""
    events: list[Any] = []
    for _ in range(draw(st.integers(0, 25))):
        record_id, details = uuid4(), draw(stored_details)
        made = RequestRecord.Completed if details.get("outcome") == "completed" else RequestRecord.Failed
        events.append(
            made(
                originator_id=record_id,
                originator_version=1,
                timestamp=draw(stamps),
                originator_topic=TOPIC,
                details=details,
            )
        )
        for version in range(2, 2 + draw(st.integers(0, 2))):
            attempt = draw(attempts)
            events.append(
                RequestRecord.AttemptFailed(
                    originator_id=record_id, originator_version=version, timestamp=draw(stamps), attempt=attempt
                )
            )
    return events


def split(events: list[Any], cut: int) -> tuple[list[Any], list[Any]]:
    return events[:cut], events[cut:]


# --- the properties --------------------------------------------------------------------


@given(record_histories())
def test_the_usage_fold_gives_the_old_buckets(events: list[Any]) -> None:
    records = [e for e in events if not isinstance(e, RequestRecord.AttemptFailed)]
    assert fold_usage(records) == old_fold_usage(records)


@given(record_histories(), st.integers(0, 60))
def test_the_provider_fold_gives_the_old_buckets_in_any_split_into_batches(events: list[Any], cut: int) -> None:
    first = {e.originator_id: e for e in events if e.originator_version == 1}
    for batch in split(events, cut):  # an attempt's record may be in an earlier batch: read back
        assert fold_providers(batch, first.__getitem__) == old_fold_providers(batch, first.__getitem__)


@given(st.lists(stamps | st.datetimes(timezones=st.just(UTC) | offsets), max_size=20))
def test_sqlite_times_are_isoformat_in_utc_for_any_sequence(times: list[datetime]) -> None:
    store = SqliteStore(":memory:")
    assert [store.to_db_time(at) for at in times] == [
        at.astimezone(UTC).isoformat(timespec="microseconds") for at in times
    ]
    assert store.to_db_time(None) is None


@settings(max_examples=50)
@given(record_histories(), st.sampled_from((None, ("a", "b"))), st.sampled_from((None, "user-1")))
def test_the_request_log_stores_what_the_old_parameters_stored(
    events: list[Any], tags: tuple[str, ...] | None, user: str | None
) -> None:
    rows = [row_of(e) for e in events if not isinstance(e, RequestRecord.AttemptFailed)]
    if tags is not None:
        rows = [
            RequestRow(
                **{**{c: getattr(r, c) for c in COLUMNS}, "tags": tags, "end_user": user, "metadata": (("k", "v"),)}
            )
            for r in rows
        ]
    view = SqlRequestLogView(SqliteStore(":memory:"))
    conn = sqlite3.connect(":memory:")
    marks = ", ".join("?" * len(COLUMNS))
    conn.execute(f"CREATE TABLE t ({', '.join(COLUMNS)})")
    conn.executemany(f"INSERT INTO t VALUES ({marks})", [view._params(r) for r in rows])
    conn.execute(f"CREATE TABLE old ({', '.join(COLUMNS)})")
    conn.executemany(f"INSERT INTO old VALUES ({marks})", [old_request_log_params(r) for r in rows])
    stored = "SELECT {0} FROM {1} ORDER BY rowid"
    typed = ", ".join(f"{c}, typeof({c})" for c in COLUMNS)
    assert conn.execute(stored.format(typed, "t")).fetchall() == conn.execute(stored.format(typed, "old")).fetchall()


def every_event_class() -> list[type[Any]]:
    nested = [Account, Provider, RequestRecord, WebhookRegistry]
    return [c for owner in nested for c in vars(owner).values() if isinstance(c, type) and hasattr(c, "originator_id")]


def test_the_alert_process_classifies_every_event_class_as_isinstance_does() -> None:
    for cls in every_event_class():
        expected = next(
            (
                kind
                for kind, classes in (
                    (alerts._WEBHOOK, alerts._WEBHOOK_EVENTS),
                    (alerts._ACCOUNT, alerts._ACCOUNT_EVENTS),
                    (alerts._PROVIDER, alerts._PROVIDER_EVENTS),
                    (alerts._RECORD, alerts._RECORD_EVENTS),
                )
                if issubclass(cls, classes)
            ),
            alerts._OTHER,
        )
        assert alerts._kind_of(cls) == expected, cls


@given(record_histories())
def test_the_alert_process_reads_the_old_state_key_of_any_record(events: list[Any]) -> None:
    for event in events:
        assert alerts._key_of(event, alerts._kind_of(type(event))) == old_key_of(event)


@given(
    st.uuids(),
    st.sampled_from((Account.Created, Account.HoldPlaced, Provider.Registered, WebhookRegistry.WebhookAdded)),
)
def test_the_alert_process_reads_the_old_state_key_of_an_account_or_provider(owner: UUID, cls: type[Any]) -> None:
    event = cls.__new__(cls)
    object.__setattr__(event, "originator_id", owner)
    assert alerts._key_of(event, alerts._kind_of(cls)) == old_key_of(event)


def test_the_request_log_view_binds_a_bool_for_postgres(tmp_path: Path) -> None:
    class Postgres(SqliteStore):
        kind = "postgres"

    rows = [
        row_of(
            RequestRecord.Completed(
                originator_id=uuid4(),
                originator_version=1,
                timestamp=base,
                originator_topic=TOPIC,
                details={"stream": True},
            )
        )
    ]
    assert SqlRequestLogView(Postgres(tmp_path / "x.sqlite"))._params(rows[0])[COLUMNS.index("stream")] is True
    assert type(SqlRequestLogView(SqliteStore(tmp_path / "y.sqlite"))._params(rows[0])[COLUMNS.index("stream")]) is int
