"""``verify`` of one window of record times (application/verify_window.py) on SQLite and
PostgreSQL: a correct ledger's window is ok and reads that window's rows (and its charges)
only; a charge differing from its record, a double charge, a wrongly priced record, a record
never charged, a charge never recorded and a refund above its charge are each named with
their request when inside the window, and not when outside it (where the full verify names
them); a charge just outside the window, by time or by position, is never called missing.

Histories are written through the domain aggregates, saved as the gateway saves them (a
request's charge and record in one save); a doctored history is written the same way with
the fault in it. Rows read are counted where the recorder hands them over, not timed."""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.domain import Aggregate
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.bootstrap import in_memory_ledger
from adapters.settings import DatabaseConfig, parse_database_url
from application.accounts import Accounts
from application.ledger import Ledger
from application.verify import LedgerVerifier
from application.verify_window import NOT_CHECKED, VerifyWindow, WindowVerifier
from domain.account import Account
from domain.errors import InvalidRequest
from domain.pricing import price_usage
from domain.request_record import RequestRecord
from domain.usage import Usage
from projections.read_models import build_read_models
from tests.benchmarks.audit_scale import PRICE, RowCount, build, charged_record, prepare
from tests.support.event_times import events_stamped_at

START = datetime(2026, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class Request:
    request_id: UUID
    at: datetime
    cost: int

    @property
    def hex(self) -> str:
        return self.request_id.hex


def record_of(
    request_id: UUID, account: Account, usage: Usage, cost: int, ledger: Ledger, *, charge: int, hold: int
) -> RequestRecord:
    """A completed request's record as the gateway writes one (``hold`` 0: track mode)."""
    version = ledger.price_book().latest.number
    return charged_record(request_id, account.id.hex, usage, cost, version, START, charge=charge, hold=hold)


def write(
    ledger: Ledger,
    account: Account,
    at: datetime,
    tokens: int,
    *,
    charge_at: datetime | None = None,
    overpriced: int = 0,
    short_charge: int = 0,
    charged: bool = True,
    recorded: bool = True,
) -> Request:
    """One request held, charged (stamped ``charge_at``, else ``at``) and recorded (stamped
    ``at``) in one save, as the gateway saves it; the keywords write it wrong: a cost
    ``overpriced`` above its usage's price, a charge ``short_charge`` below its record's, no
    charge, no record."""
    usage = Usage(input_tokens=tokens, output_tokens=tokens // 3 + 1)
    cost = price_usage(PRICE, usage) + overpriced
    request_id = uuid4()
    with events_stamped_at(charge_at or at):
        account.place_hold(request_id, cost + 1000, at + HOUR)
        if charged:
            account.settle_hold(request_id, cost - short_charge)
    others: list[Aggregate] = []
    if recorded:
        with events_stamped_at(at):
            others.append(record_of(request_id, account, usage, cost, ledger, charge=cost, hold=cost + 1000))
    ledger.save(account, *others)
    return Request(request_id, at, cost)


def charge_again(ledger: Ledger, account: Account, request: Request) -> None:
    """A second charge of a request already charged (the hold is gone: charged without one)."""
    with events_stamped_at(request.at):
        account.charge_without_hold(request.request_id, request.cost)
    ledger.save(account)


def refund(ledger: Ledger, account: Account, request: Request, amount: int) -> None:
    with events_stamped_at(request.at + HOUR):
        account.refund_charge(request.request_id, amount, "goodwill")
    ledger.save(account)


def new_account(ledger: Ledger, name: str = "acme") -> Account:
    account = Accounts(ledger).create_account(name)
    account.grant_credits(10**15, "test")
    return account


def ten_days(ledger: Ledger, account: Account) -> list[Request]:
    """Twelve correct requests a day for ten days, an hour apart from 06:00."""
    return [
        write(ledger, account, START + timedelta(days=day, hours=6 + hour), 100 + 7 * day + hour)
        for day in range(10)
        for hour in range(12)
    ]


def day(n: int) -> VerifyWindow:
    return VerifyWindow(START + n * DAY, START + (n + 1) * DAY)


def dashed(request: Request) -> str:
    return str(request.request_id)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Ledger, DatabaseConfig]]:
    url = request.getfixturevalue("pg_database_url") if request.param == "postgres" else None
    database = parse_database_url(url, tmp_path)
    ledger = build(database)
    yield ledger, database
    ledger.close()


def full_verify_problems(ledger: Ledger, database: DatabaseConfig) -> list[str]:
    read_models = build_read_models(database, ledger)
    read_models.create_tables()
    try:
        return LedgerVerifier(ledger, read_models).verify().problems
    finally:
        read_models.close()


def test_a_correct_ledgers_day_verifies_and_reads_that_day_only(store: tuple[Ledger, DatabaseConfig]) -> None:
    ledger, _ = store
    history = ten_days(ledger, new_account(ledger))
    in_day = [r for r in history if START + 4 * DAY <= r.at < START + 5 * DAY]
    counted = RowCount(ledger.recorder)
    report = WindowVerifier(ledger, margin=0).verify(day(4))
    assert report.problems == [] and report.notes == [NOT_CHECKED]
    assert report.checked["request_records"] == report.checked["charges"] == len(in_day) == 12
    assert report.checked["accounts"] == 1 and report.checked["open_holds"] is None
    assert report.checked["window"] == {"from": "2026-03-05T00:00:00+00:00", "to": "2026-03-06T00:00:00+00:00"}
    assert counted.rows == 2 * len(in_day)  # the day's records and their charges; nothing of the 108 others
    assert WindowVerifier(ledger).verify(VerifyWindow(None, None)).checked["request_records"] == len(history)


def test_doctoring_inside_the_window_is_named_by_request(store: tuple[Ledger, DatabaseConfig]) -> None:
    ledger, _ = store
    account = new_account(ledger)
    ten_days(ledger, account)
    at = START + 3 * DAY + 20 * HOUR
    short = write(ledger, account, at, 500, short_charge=1)
    twice = write(ledger, account, at + timedelta(minutes=1), 600)
    charge_again(ledger, account, twice)
    overpriced = write(ledger, account, at + timedelta(minutes=2), 700, overpriced=7)
    uncharged = write(ledger, account, at + timedelta(minutes=3), 800, charged=False)
    unrecorded = write(ledger, account, at + timedelta(minutes=4), 900, recorded=False)
    refunded = write(ledger, account, at + timedelta(minutes=5), 1000)
    refund(ledger, account, refunded, refunded.cost + 1)
    version = ledger.price_book().latest.number

    problems = WindowVerifier(ledger).verify(day(3)).problems

    assert problems == [
        f"request {dashed(short)}: charged {short.cost - 1} but its record says {short.cost}",
        f"account {account.id}: request {dashed(twice)} was charged twice",
        f"request {dashed(uncharged)}: its record says charged {uncharged.cost}, but its account has no charge for it",
        f"request {dashed(refunded)}: refunded {refunded.cost + 1}, more than its charge {refunded.cost}",
        f"request {dashed(unrecorded)}: charged {unrecorded.cost} with no request record",
        f"request {dashed(overpriced)}: cost {overpriced.cost} is not its usage priced under version {version}",
    ]
    assert WindowVerifier(ledger).verify(day(2)).problems == []
    assert WindowVerifier(ledger).verify(VerifyWindow(START + 3 * DAY, at)).problems == []


def test_doctoring_outside_the_window_is_left_to_the_full_verify(store: tuple[Ledger, DatabaseConfig]) -> None:
    ledger, database = store
    account = new_account(ledger)
    ten_days(ledger, account)
    at = START + 7 * DAY + 20 * HOUR  # day 7, after its correct requests
    short = write(ledger, account, at, 500, short_charge=1)
    twice = write(ledger, account, at + timedelta(minutes=1), 600)
    charge_again(ledger, account, twice)
    overpriced = write(ledger, account, at + timedelta(minutes=2), 700, overpriced=7)
    write(ledger, account, at + timedelta(minutes=3), 800, charged=False)
    unrecorded = write(ledger, account, at + timedelta(minutes=4), 900, recorded=False)
    refunded = write(ledger, account, at + timedelta(minutes=5), 1000)
    refund(ledger, account, refunded, refunded.cost + 1)

    for window in (day(6), day(8), VerifyWindow(START + 7 * DAY, at)):
        assert WindowVerifier(ledger).verify(window).problems == []  # the margin reads them, but they are not its own
    full = full_verify_problems(ledger, database)
    assert f"account {account.id}: request {dashed(twice)} was charged twice" in full
    assert f"request {dashed(short)}: charged {short.cost - 1} but its record says {short.cost}" in full
    assert any(problem.startswith(f"request {dashed(overpriced)}: cost {overpriced.cost} is not") for problem in full)
    assert f"request {dashed(unrecorded)}: charged {unrecorded.cost} with no request record" in full
    assert len(WindowVerifier(ledger).verify(day(7)).problems) == 6


def test_a_charge_just_outside_the_window_by_time_is_not_missing(store: tuple[Ledger, DatabaseConfig]) -> None:
    ledger, _ = store
    account = new_account(ledger)
    edge = START + 2 * DAY
    write(ledger, account, edge - timedelta(seconds=1), 200)
    write(ledger, account, edge, 300, charge_at=edge - timedelta(microseconds=1))
    inside = WindowVerifier(ledger).verify(VerifyWindow(edge, edge + DAY))
    assert inside.problems == [] and inside.checked["charges"] == 1
    # its charge is the earlier window's by time, and read there: its record is found by id
    before = WindowVerifier(ledger).verify(VerifyWindow(edge - DAY, edge))
    assert before.problems == [] and before.checked["request_records"] == before.checked["charges"] == 1


def test_a_charge_far_before_its_record_by_position_is_found(store: tuple[Ledger, DatabaseConfig]) -> None:
    """A transaction of many requests (a group-commit batch): every charge, then every record."""
    ledger, _ = store
    accounts = [new_account(ledger, f"acct-{n}") for n in range(3)]
    at = START + DAY
    records: list[Aggregate] = []
    for n in range(30):
        account, request_id = accounts[n % 3], uuid4()
        usage = Usage(input_tokens=100 + n, output_tokens=10)
        cost = price_usage(PRICE, usage)
        with events_stamped_at(at + timedelta(seconds=n)):
            account.place_hold(request_id, cost + 5, at + HOUR)
            account.settle_hold(request_id, cost)
            records.append(record_of(request_id, account, usage, cost, ledger, charge=cost, hold=cost + 5))
    ledger.save(*accounts, *records)
    last_only = VerifyWindow(at + timedelta(seconds=29), at + HOUR)
    for margin in (0, 1, 10_000):
        report = WindowVerifier(ledger, margin=margin).verify(last_only)
        assert report.problems == [] and report.checked["charges"] == 1


def test_a_record_never_charged_is_named_after_the_whole_history_is_read(
    store: tuple[Ledger, DatabaseConfig],
) -> None:
    ledger, _ = store
    account = new_account(ledger)
    ten_days(ledger, account)
    uncharged = write(ledger, account, START + 9 * DAY + 20 * HOUR, 800, charged=False)
    report = WindowVerifier(ledger, margin=0).verify(VerifyWindow(START + 9 * DAY + 19 * HOUR, None))
    assert report.problems == [
        f"request {dashed(uncharged)}: its record says charged {uncharged.cost}, but its account has no charge for it"
    ]
    assert report.checked["positions_read"]["after"] == 0  # widened to the beginning before saying so


def test_a_track_mode_record_needs_no_charge(store: tuple[Ledger, DatabaseConfig]) -> None:
    ledger, _ = store
    account = new_account(ledger)
    usage = Usage(input_tokens=50, output_tokens=5)
    with events_stamped_at(START):
        record = record_of(uuid4(), account, usage, price_usage(PRICE, usage), ledger, charge=0, hold=0)
    ledger.save(record)
    report = WindowVerifier(ledger).verify(VerifyWindow(START, START + DAY))
    assert report.problems == [] and report.checked["request_records"] == 1 and report.checked["charges"] == 0


def test_a_window_must_start_before_it_ends() -> None:
    with pytest.raises(InvalidRequest) as refused:
        VerifyWindow(START, START)
    assert refused.value.param == "from"
    assert VerifyWindow.of(None, None) is None
    assert VerifyWindow(datetime(2026, 3, 1), None).since == START  # no zone: UTC


def test_a_window_at_the_calendars_ends_is_verified(store: tuple[Ledger, DatabaseConfig]) -> None:
    ledger, _ = store
    write(ledger, new_account(ledger), START, 300)
    first, last = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)
    for window, records in ((VerifyWindow(first, START), 0), (VerifyWindow(START, last), 1)):
        report = WindowVerifier(ledger).verify(window)
        assert report.problems == [] and report.checked["request_records"] == records


# --- a correct ledger never fails any window ------------------------------------------------


def random_history(ledger: Ledger, draw: Any) -> None:
    """Correct requests at irregular times, some several to a transaction (every charge before
    every record, as a batch), some charged a moment before their record's time, some charged
    after their hold expired, some recorded in track mode, some refunded up to their charge."""
    accounts = [new_account(ledger, f"acct-{n}") for n in range(3)]
    at = START
    for _ in range(draw(st.integers(1, 25))):
        batch: list[Aggregate] = []
        touched: dict[UUID, Account] = {}
        for _ in range(draw(st.integers(1, 4))):
            at += timedelta(milliseconds=draw(st.integers(0, 3_600_000)))
            account = accounts[draw(st.integers(0, 2))]
            touched[account.id] = account
            usage = Usage(input_tokens=draw(st.integers(1, 5000)), output_tokens=draw(st.integers(1, 500)))
            cost = price_usage(PRICE, usage)
            request_id, kind = uuid4(), draw(st.sampled_from(["settled", "expired", "track", "early"]))
            if kind == "track":
                with events_stamped_at(at):
                    batch.append(record_of(request_id, account, usage, cost, ledger, charge=cost, hold=0))
                continue
            with events_stamped_at(at - timedelta(microseconds=draw(st.integers(0, 2000))) if kind == "early" else at):
                account.place_hold(request_id, cost + 10, at + HOUR)
                if kind == "expired":
                    account.release_hold(request_id, "expired")
                    account.charge_without_hold(request_id, cost)
                else:
                    account.settle_hold(request_id, cost)
            with events_stamped_at(at):
                batch.append(record_of(request_id, account, usage, cost, ledger, charge=cost, hold=cost + 10))
            if draw(st.booleans()) and draw(st.booleans()):
                with events_stamped_at(at + timedelta(milliseconds=1)):
                    account.refund_charge(request_id, draw(st.integers(1, max(cost, 1))), "goodwill")
        ledger.save(*touched.values(), *batch)


window_ends = st.none() | st.integers(-1_000, 30 * 3_600_000).map(lambda ms: START + timedelta(milliseconds=ms))


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
@settings(max_examples=25, deadline=None)
@given(data=st.data(), margin=st.sampled_from([0, 1, 3, 10_000]))
def test_a_correct_ledger_never_fails_any_window(
    tmp_path_factory: pytest.TempPathFactory, kind: str, data: Any, margin: int
) -> None:
    if kind == "sqlite":
        ledger = build(parse_database_url(None, tmp_path_factory.mktemp("history")))
    else:
        ledger = in_memory_ledger()
        ledger.initialise()
        prepare(ledger)
    try:
        random_history(ledger, data.draw)
        records = WindowVerifier(ledger).verify(VerifyWindow(None, None)).checked["request_records"]
        for _ in range(4):
            since, until = data.draw(window_ends), data.draw(window_ends)
            if since is not None and until is not None:
                since, until = min(since, until), max(until, since + timedelta(milliseconds=1))
            report = WindowVerifier(ledger, margin=margin).verify(VerifyWindow(since, until))
            assert report.problems == [], (since, until, report.problems)
            if since is not None:  # the window and what comes before it hold every record once
                before = WindowVerifier(ledger, margin=margin).verify(VerifyWindow(None, since))
                after = WindowVerifier(ledger, margin=margin).verify(VerifyWindow(since, None))
                assert before.checked["request_records"] + after.checked["request_records"] == records
    finally:
        ledger.close()
