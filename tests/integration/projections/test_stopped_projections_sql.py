"""An event the read models cannot store — planted in the event store past the domain's
bounds — stops only the projections that store it, on SQLite and on PostgreSQL: each says
where and why (in every process), the others go on past it, and the store keeps working
for what comes after."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from uuid import UUID

import psycopg
import pytest
from eventsourcing.utils import get_topic

from adapters.settings import DatabaseConfig
from domain.errors import ProjectionStopped
from domain.request_record import RequestRecord
from projections.ledger_entries import LedgerEntriesProjection
from projections.read_models import ReadModels, unguarded
from tests.unit.projections.projection_contract import NANO, T0, FakeLedger

HUGE = 10**20  # past 64 bits: no INTEGER/BIGINT column holds it
REQUEST_MODELS = {"usage", "request_log", "provider_hourly"}
ACCOUNT_MODELS = {"balances", "ledger_entries"}
OVERFLOW = {
    "sqlite": "OverflowError: Python int too large to convert to SQLite INTEGER",
    "postgres": "NumericValueOutOfRange: bigint out of range",
}


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> DatabaseConfig:
    return request.getfixturevalue(f"{request.param}_database")


@pytest.fixture
def ledger(database: DatabaseConfig) -> Iterator[FakeLedger]:
    app = FakeLedger(env=database.eventsourcing_env(create_tables=True))
    yield app
    app.close()


def plant_huge_grant(ledger: FakeLedger, account_id: UUID, amount: int) -> int:
    """A CreditGranted past every bound, saved without the domain's checks; its position."""
    account = ledger.repository.get(account_id)
    account._credit_granted(amount=amount, reason="planted", idempotency_key=None)
    ledger.save(account)
    return ledger.recorder.max_notification_id()


def test_a_request_record_too_large_to_store_stops_the_request_read_models_alone(
    database: DatabaseConfig, ledger: FakeLedger, make_read_models: Callable[[], ReadModels]
) -> None:
    read_models = make_read_models()
    alice = ledger.open_account("alice")
    ledger.grant(alice, NANO)
    ledger.record(T0, account_id=alice, charge=5)
    ledger.record(T0, account_id=alice, tokens=(HUGE, HUGE), charge=HUGE)
    planted = ledger.recorder.max_notification_id()
    ledger.grant(alice, 2)
    ledger.record(T0, account_id=alice, charge=7)

    read_models.runner.catch_up()  # does not raise, and does not loop

    head = ledger.recorder.max_notification_id()
    positions = read_models.store.positions()
    assert {name: positions[name] for name in REQUEST_MODELS} == {name: planted - 1 for name in REQUEST_MODELS}
    assert {name: positions[name] for name in ACCOUNT_MODELS} == {name: head for name in ACCOUNT_MODELS}
    row = read_models.balances.get_balance(alice)
    assert row is not None and row.balance == NANO + 2
    with pytest.raises(ProjectionStopped):
        read_models.requests.list_requests()
    assert [r.charge for r in unguarded(read_models.requests).list_requests()] == [5]

    # what another process (the CLI beside a worker) sees, without applying anything
    status = {s.name: s for s in make_read_models().runner.status()}
    for name in REQUEST_MODELS:
        assert (status[name].state, status[name].stopped_at, status[name].stopped_event, status[name].error) == (
            "stopped",
            planted,
            get_topic(RequestRecord.Completed),
            OVERFLOW[database.kind],
        )
    assert {status[name].state for name in ACCOUNT_MODELS} == {"running"}


def test_a_grant_too_large_to_store_stops_balances_and_ledger_entries_and_requests_go_on(
    database: DatabaseConfig, ledger: FakeLedger, make_read_models: Callable[[], ReadModels]
) -> None:
    read_models = make_read_models()
    alice, bob = ledger.open_account("alice"), ledger.open_account("bob")
    ledger.grant(bob, 3)
    planted = plant_huge_grant(ledger, alice, 10**25)
    ledger.grant(bob, 4)
    ledger.record(T0, account_id=bob, charge=9)

    read_models.runner.catch_up()

    head = ledger.recorder.max_notification_id()
    stops = read_models.store.stops()
    assert set(stops) == ACCOUNT_MODELS
    assert {stop.position for stop in stops.values()} == {planted}
    assert {stop.error for stop in stops.values()} == {OVERFLOW[database.kind]}
    assert read_models.store.positions()["usage"] == head
    assert [r.charge for r in read_models.requests.list_requests()] == [9]
    row = unguarded(read_models.balances).get_balance(bob)
    assert row is not None and row.balance == 3  # stopped at the planted event: bob's later grant is not in it
    movements = ledger.recorder.select_notifications(None, 100, topics=sorted(LedgerEntriesProjection.topics))
    bobs = [n.id for n in movements if n.id < planted and UUID(str(n.originator_id)) == bob]
    # written while the runner isolated the failing event: at the notification id the runner read
    assert [e.position for e in unguarded(read_models.ledger).list_entries(bob)] == bobs != []
    with pytest.raises(ProjectionStopped) as stopped:
        read_models.balances.get_balance(bob)
    assert stopped.value.position == planted


def test_a_store_made_before_stops_were_kept_gets_their_table_at_the_first_stop(
    database: DatabaseConfig, ledger: FakeLedger, make_read_models: Callable[[], ReadModels]
) -> None:
    make_read_models()  # creates the tables
    if database.kind == "sqlite":
        with sqlite3.connect(database.read_models_sqlite_path) as conn:
            conn.execute("DROP TABLE th_rm_stopped")
    else:
        with psycopg.connect(database.conninfo(), options=f"-c search_path={database.schema}") as conn:
            conn.execute("DROP TABLE th_rm_stopped")
    old = make_read_models()  # an upgraded process on a store `tallyhub init` has not seen since
    alice = ledger.open_account("alice")
    ledger.grant(alice, 1)
    assert old.runner.catch_up() == 5 and old.store.stops() == {}  # 3, and 2 to the audit log
    assert {s.state for s in old.runner.status()} == {"running"}
    planted = plant_huge_grant(ledger, alice, 10**25)
    old.runner.catch_up()
    assert {name: stop.position for name, stop in make_read_models().store.stops().items()} == {
        name: planted for name in ACCOUNT_MODELS
    }
