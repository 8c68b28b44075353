"""A replay of a window reads that window's request records only, through the index by event
time the SQLite and PostgreSQL recorders keep (adapters/persistence/event_reads.py), and
gives exactly the report a read of the whole history gives (the store without the index).

Rows read are counted where the recorder hands them over (``RowCount``), not timed."""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import StoredEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.settings import DatabaseConfig, parse_database_url
from application.accounts import Accounts
from application.ledger import Ledger
from application.replay import COMPLETED, Replayer, ReplayPlan, ReplayReport
from domain.account import Account
from domain.errors import EmptyWindow
from domain.pricing import price_usage
from domain.usage import Usage
from tests.benchmarks.audit_scale import DOUBLED, MODEL, PRICE, RowCount, build, charged_record
from tests.support.event_times import events_stamped_at

START = datetime(2026, 3, 1, tzinfo=UTC)
PLUS_FIVE = timezone(timedelta(hours=5))


@dataclass(frozen=True)
class Charge:
    request_id: UUID
    at: datetime
    cost: int


def charge_at(ledger: Ledger, account: Account, at: datetime, tokens: int) -> Charge:
    """One charged request whose events are all stamped ``at``, saved as the gateway saves them."""
    usage = Usage(input_tokens=tokens, output_tokens=tokens // 3 + 1)
    cost = price_usage(PRICE, usage)
    request_id = uuid4()
    with events_stamped_at(at):
        account.place_hold(request_id, cost, at + timedelta(hours=1))
        account.settle_hold(request_id, cost)
        record = charged_record(request_id, account.id.hex, usage, cost, ledger.price_book().latest.number, at)
        ledger.save(account, record)
    return Charge(request_id, at, cost)


def new_store(kind: str, tmp_path: Path, pg_url: str | None) -> tuple[Ledger, DatabaseConfig]:
    database = parse_database_url(pg_url if kind == "postgres" else None, tmp_path)
    return build(database), database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Ledger, DatabaseConfig]]:
    url = request.getfixturevalue("pg_database_url") if request.param == "postgres" else None
    ledger, database = new_store(request.param, tmp_path, url)
    yield ledger, database
    ledger.close()


def ten_days(ledger: Ledger) -> list[Charge]:
    """Twelve charges a day for ten days, an hour apart from 06:00, one account."""
    account = Accounts(ledger).create_account("acme")
    account.grant_credits(10**15, "test")
    return [
        charge_at(ledger, account, START + timedelta(days=day, hours=6 + hour), 100 + 7 * day + hour)
        for day in range(10)
        for hour in range(12)
    ]


def preview(ledger: Ledger, since: datetime | None, until: datetime | None) -> tuple[ReplayReport, int]:
    """The preview of doubled prices over ``[since, until)`` and the event rows it read."""
    counted = RowCount(ledger.recorder)
    try:
        return Replayer(ledger).preview(ReplayPlan({MODEL: DOUBLED}, since=since, until=until)), counted.rows
    finally:
        for name in ("select_rows", "select_rows_at"):
            vars(ledger.recorder).pop(name, None)


def drop_time_indexes(ledger: Ledger, database: DatabaseConfig) -> None:
    """The store as a commit before the index left it (the index is created with the tables)."""
    recorder: Any = ledger.recorder
    schema = f"{recorder.datastore.schema}." if database.kind == "postgres" else ""
    with recorder.datastore.transaction(commit=True) as cursor:
        for suffix in ("record_time", "refund_time"):
            cursor.execute(f"DROP INDEX IF EXISTS {schema}{recorder.events_table_name}_{suffix}")


def summary(report: ReplayReport) -> tuple[Any, ...]:
    lines = [(line.account_id, line.model, line.charges, line.old, line.new) for line in report.lines]
    return report.charges, report.refunded_skipped, report.old, report.new, lines


def test_one_days_window_reads_that_days_records_only(store: tuple[Ledger, DatabaseConfig]) -> None:
    ledger, database = store
    history = ten_days(ledger)
    day = START + timedelta(days=4)
    in_day = [c for c in history if day <= c.at < day + timedelta(days=1)]
    refunded = in_day[0]
    account = ledger.get_account("acme")

    def refund(acme: Account) -> list[Any]:
        acme.refund_charge(refunded.request_id, refunded.cost, "goodwill")
        return []

    ledger.change_account(account.id, refund)

    whole, whole_rows = preview(ledger, None, None)
    window, window_rows = preview(ledger, day, day + timedelta(days=1))

    assert whole_rows == len(history) + 1  # every record, and the refund
    assert window_rows == len(in_day) + 1  # the day's twelve records and the refund: nothing else
    assert window.charges == len(in_day) - 1 and window.refunded_skipped == 1
    assert window.old == sum(c.cost for c in in_day[1:]) and window.new == 2 * window.old
    assert whole.charges == len(history) - 1

    drop_time_indexes(ledger, database)
    unindexed, unindexed_rows = preview(ledger, day, day + timedelta(days=1))
    assert summary(unindexed) == summary(window)  # the same figures, read from the whole history
    assert unindexed_rows > len(history)


def test_a_window_at_the_calendars_ends_replays_everything_in_it(store: tuple[Ledger, DatabaseConfig]) -> None:
    ledger, _ = store
    history = ten_days(ledger)
    first, last = datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)

    report, _ = preview(ledger, first, last)  # the index's margin would overflow at either end

    assert report.charges == len(history) and report.old == sum(c.cost for c in history)
    assert summary(report) == summary(preview(ledger, None, None)[0])


def test_a_time_written_at_another_offset_is_placed_by_its_instant(store: tuple[Ledger, DatabaseConfig]) -> None:
    ledger, _ = store
    account = Accounts(ledger).create_account("acme")
    account.grant_credits(10**15, "test")
    early = charge_at(ledger, account, START + timedelta(hours=1), 500)  # 01:00Z
    # 02:30Z written as 07:30+05:00: as text it sorts after 06:00Z, as an instant it is before
    shifted = charge_at(ledger, account, (START + timedelta(hours=2, minutes=30)).astimezone(PLUS_FIVE), 700)
    late = charge_at(ledger, account, START + timedelta(hours=6), 900)

    report, read = preview(ledger, START + timedelta(hours=2), START + timedelta(hours=3))
    assert (report.charges, report.old) == (1, shifted.cost)
    assert read == 1
    with pytest.raises(EmptyWindow):
        preview(ledger, START + timedelta(hours=7), START + timedelta(hours=8))
    assert preview(ledger, START, START + timedelta(hours=7))[0].old == early.cost + shifted.cost + late.cost


@pytest.fixture(scope="module")
def irregular(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Ledger, list[Charge]]]:
    """Charges at irregular times: some in the same second, some a millisecond apart."""
    ledger, _ = new_store("sqlite", tmp_path_factory.mktemp("irregular"), None)
    account = Accounts(ledger).create_account("acme")
    account.grant_credits(10**15, "test")
    offsets = [0, 1, 1, 999, 1000, 1001, 59_999, 60_000, 3_600_000, 3_600_001, 86_399_999, 86_400_000]
    offsets += [5_000_000 + 7_919 * n * n for n in range(40)]
    history = [
        charge_at(ledger, account, START + timedelta(milliseconds=ms, microseconds=n % 3), 10 + n)
        for n, ms in enumerate(offsets)
    ]
    yield ledger, history
    ledger.close()


window_edges = st.integers(min_value=-1_000, max_value=20_000_000).map(lambda ms: START + timedelta(milliseconds=ms))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(since=st.none() | window_edges, until=st.none() | window_edges)
def test_a_window_reports_exactly_its_charges_and_reads_little_more(
    irregular: tuple[Ledger, list[Charge]], since: datetime | None, until: datetime | None
) -> None:
    ledger, history = irregular
    if since is not None and until is not None and since >= until:
        return
    inside = [c for c in history if (since is None or c.at >= since) and (until is None or c.at < until)]
    near = [
        c
        for c in history
        if (since is None or c.at >= since - timedelta(seconds=1))
        and (until is None or c.at < until + timedelta(seconds=1))
    ]
    if not inside:
        with pytest.raises(EmptyWindow):
            preview(ledger, since, until)
        return
    report, read = preview(ledger, since, until)
    assert (report.charges, report.old, report.new) == (len(inside), sum(c.cost for c in inside), 2 * report.old)
    if since is not None or until is not None:
        assert len(inside) <= read <= len(near)


def test_the_index_reads_a_time_wherever_the_state_keeps_it_and_never_fails_a_write(
    store: tuple[Ledger, DatabaseConfig],
) -> None:
    ledger, _ = store
    recorder: Any = ledger.recorder
    at = START + timedelta(hours=3)
    reordered = json.dumps({"details": {}, "timestamp": {"_type_": "datetime_iso", "_data_": at.isoformat()}}).encode()
    not_json = b"\x00\x01 not a JSON state"
    first = recorder.max_notification_id() or 0
    recorder.insert_events(
        [StoredEvent(uuid4(), 1, COMPLETED, reordered), StoredEvent(uuid4(), 1, COMPLETED, not_json)]
    )
    stop = recorder.max_notification_id()
    assert stop == first + 2  # the state that is no JSON was stored: the index never refuses a write
    found = recorder.window_positions(COMPLETED, at - timedelta(minutes=1), at + timedelta(minutes=1), stop)
    assert list(found) == [first + 1]
    assert list(recorder.window_positions(COMPLETED, None, None, stop)) == [first + 1]  # no time: in no window
