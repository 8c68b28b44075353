"""A batch of the SQLite recorder that fits one statement is that statement alone, in SQLite's
own transaction of it: no BEGIN and no COMMIT call (each call into SQLite lets go of the
interpreter lock, and a group commit's writer then waits to win it back), yet durable when
the call returns, refused whole, raised as eventsourcing's errors, and no transaction left
open on the connection. A longer batch keeps the explicit transaction around its statements."""

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import IntegrityError, OperationalError, StoredEvent
from eventsourcing.sqlite import SQLiteConnection, SQLiteDatastore

from adapters.persistence.sqlite_recorder import ROWS_PER_STATEMENT, BatchedSQLiteApplicationRecorder


class Traced:
    """A recorder whose connections report every statement they run."""

    def __init__(self, path: Path) -> None:
        self.statements: list[str] = []
        self.connections: list[SQLiteConnection] = []
        datastore = SQLiteDatastore(str(path))
        create = datastore.pool._create_connection

        def traced() -> SQLiteConnection:
            connection = create()
            connection._sqlite_conn.set_trace_callback(self.statements.append)
            self.connections.append(connection)
            return connection

        datastore.pool._create_connection = traced  # type: ignore[method-assign]
        self.recorder = BatchedSQLiteApplicationRecorder(datastore)
        self.recorder.create_table()

    def run(self, stored: list[StoredEvent]) -> tuple[list[str], object]:
        """The statements one insert ran (first words) and what it returned or raised."""
        self.statements.clear()
        try:
            outcome: object = self.recorder.insert_events(stored)
        except Exception as exc:  # noqa: BLE001 - returned to the test
            outcome = exc
        return [s.split()[0].upper() for s in self.statements], outcome

    def open_transactions(self) -> list[bool]:
        return [c._sqlite_conn.in_transaction for c in self.connections]


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[Traced]:
    made = Traced(tmp_path / "events.sqlite")
    yield made
    made.recorder.datastore.close()


def events(originator: UUID, versions: range) -> list[StoredEvent]:
    return [StoredEvent(originator, v, "tests:Event", f'{{"n":{v}}}'.encode()) for v in versions]


def stored_elsewhere(path: Path) -> list[tuple[int, int]]:
    """(rowid, version) of every row, as a connection of another recorder reads them."""
    with sqlite3.connect(path) as other:
        return list(other.execute("SELECT rowid, originator_version FROM stored_events ORDER BY rowid"))


def test_a_batch_of_one_statement_runs_that_statement_alone_and_is_durable_when_it_returns(
    traced: Traced, tmp_path: Path
) -> None:
    originator = uuid4()
    statements, ids = traced.run(events(originator, range(1, 4)))
    assert statements == ["INSERT"]
    assert ids == [1, 2, 3]
    assert stored_elsewhere(tmp_path / "events.sqlite") == [(1, 1), (2, 2), (3, 3)]
    assert not any(traced.open_transactions())


def test_a_refused_batch_of_one_statement_stores_none_of_it_and_leaves_no_transaction_open(
    traced: Traced, tmp_path: Path
) -> None:
    taken = uuid4()
    traced.run(events(taken, range(1, 3)))
    statements, refused = traced.run(events(uuid4(), range(1, 4)) + events(taken, range(2, 3)))
    assert statements == ["INSERT"]
    assert isinstance(refused, IntegrityError) and isinstance(refused.__cause__, sqlite3.IntegrityError)
    assert not any(traced.open_transactions())
    assert stored_elsewhere(tmp_path / "events.sqlite") == [(1, 1), (2, 2)]
    assert traced.run(events(taken, range(3, 4)))[1] == [3]


def test_a_batch_of_one_statement_that_cannot_have_the_write_lock_raises_eventsourcings_error(
    traced: Traced, tmp_path: Path
) -> None:
    traced.run(events(uuid4(), range(1, 2)))  # the recorder's connection exists: make it wait briefly
    for connection in traced.connections:
        connection._sqlite_conn.execute("PRAGMA busy_timeout = 50")
    with sqlite3.connect(tmp_path / "events.sqlite", isolation_level=None) as other:
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        statements, refused = traced.run(events(uuid4(), range(1, 3)))
        other.execute("ROLLBACK")
    assert statements == ["INSERT"]
    assert isinstance(refused, OperationalError) and isinstance(refused.__cause__, sqlite3.OperationalError)
    assert not any(traced.open_transactions())
    assert len(stored_elsewhere(tmp_path / "events.sqlite")) == 1


def test_a_batch_longer_than_one_statement_keeps_one_explicit_transaction(traced: Traced) -> None:
    statements, ids = traced.run(events(uuid4(), range(1, ROWS_PER_STATEMENT + 2)))
    assert statements == ["BEGIN", "INSERT", "INSERT", "COMMIT"]
    assert ids == list(range(1, ROWS_PER_STATEMENT + 2))
    assert not any(traced.open_transactions())
