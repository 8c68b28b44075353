"""A fenced insert: read an originator's newest events, decide, and insert, in one store
transaction that holds the events table's insert lock from its first statement.

The ledger saves optimistically: load, change, insert, and a version already taken refuses
the insert. Against another process that commits a batch on the same account every few
milliseconds, every load→insert window can hold one of its commits, so every optimistic try
can lose (application/ledger.py, ``Ledger.change``). Its last try runs here instead:

- PostgreSQL: eventsourcing's own ``lock_table_statements`` (``LOCK TABLE … IN EXCLUSIVE
  MODE``, which every insert of the event store takes) open the transaction;
- SQLite: ``BEGIN IMMEDIATE`` takes the database's write lock, which every insert needs.

Invariants kept here:
- no other insert into the events table commits between the read of the newer events and
  this transaction's insert, so the insert cannot lose a race: an ``IntegrityError`` from it
  means the decided events clash with stored ones of their own (a record that exists);
- the lock is taken only on this rare path; batches keep their own insert, untouched;
- the rows, the NOTIFY and the notification ids are eventsourcing's own, as in its insert;
- ``decide`` is called once, inside the transaction; whatever it raises rolls it back and is
  raised as it is. A call is never retried here: ``decide`` has changed its aggregate by then.
"""

import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING
from uuid import UUID

from eventsourcing.persistence import OperationalError, StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteConnection, SQLiteCursor, SQLiteTransaction

# psycopg (with eventsourcing.postgres) is imported by the PostgreSQL path only: SQLite mode
# (every CLI command, an embedded serve) never pays for it (issue 21).
if TYPE_CHECKING:
    from eventsourcing.postgres import PostgresApplicationRecorder

# Given the originator's events after the version the caller has, returns the events to insert.
Decide = Callable[[Sequence[StoredEvent]], Sequence[StoredEvent]]


class _ImmediateTransaction(SQLiteTransaction):
    """eventsourcing's SQLite transaction (its commit, rollback and error translation), begun
    with the write lock taken at once instead of at the first write."""

    def __init__(self, connection: SQLiteConnection) -> None:
        super().__init__(connection, commit=True)

    def __enter__(self) -> SQLiteCursor:
        cursor = self.connection.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:  # the lock not had within the busy timeout
            raise OperationalError(error) from error
        return cursor


def insert_fenced_sqlite(
    recorder: SQLiteApplicationRecorder, originator_id: UUID, after_version: int, decide: Decide
) -> Sequence[int]:
    """The notification ids of the rows ``decide`` returned, inserted under SQLite's write lock."""
    with recorder.datastore.get_connection(commit=True) as connection, _ImmediateTransaction(connection) as cursor:
        cursor.execute(
            recorder.select_events_statement + "AND originator_version>? ORDER BY originator_version ASC",
            (originator_id.hex, after_version),
        )
        newer = [
            StoredEvent(
                originator_id=recorder.convert_originator_id(row["originator_id"]),
                originator_version=row["originator_version"],
                topic=row["topic"],
                state=row["state"],
            )
            for row in cursor.fetchall()
        ]
        stored = decide(newer)
        if not stored:
            return []
        return recorder._insert_events(cursor, stored) or []


def insert_fenced_postgres(
    recorder: "PostgresApplicationRecorder", originator_id: UUID, after_version: int, decide: Decide
) -> Sequence[int]:
    """The notification ids of the rows ``decide`` returned, inserted under the table lock."""
    from psycopg.sql import SQL, Identifier

    newer_statement = recorder.select_events_statement + SQL(
        " AND originator_version > %s ORDER BY originator_version ASC"
    )
    with recorder.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
        for lock_statement in recorder.lock_table_statements:
            curs.execute(lock_statement, prepare=True)
        curs.execute(newer_statement, (originator_id, after_version), prepare=True)
        newer = [
            StoredEvent(
                originator_id=row["originator_id"],
                originator_version=row["originator_version"],
                topic=row["topic"],
                state=bytes(row["state"]),
            )
            for row in curs.fetchall()
        ]
        stored = decide(newer)
        if not stored:
            return []
        curs.execute(SQL("NOTIFY {0}").format(Identifier(recorder.channel_name)))
        rows = [
            recorder.construct_pg_stored_event(event.originator_id, event.originator_version, event.topic, event.state)
            for event in stored
        ]
        curs.execute(recorder.insert_events_statement, (rows,))
        return [row["notification_id"] for row in curs.fetchall()]
