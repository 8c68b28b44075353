"""The SQL store shared by the read models: SQLite (its own file, WAL) or PostgreSQL.

Invariant kept here: a projection's tracking position lives in ``th_rm_tracking`` in the
same database as its view rows, and :meth:`SqlStore.tracked` is the only way to write
either. It opens one transaction, locks the projection's tracking row (SQLite: ``BEGIN
IMMEDIATE``; PostgreSQL: an advisory transaction lock, then ``SELECT … FOR UPDATE``),
and commits the view rows together with the advanced position — or rolls both back.
So an event at or below the tracked position is never applied twice, and a crash
mid-batch loses nothing.

A projection that could not apply an event is *stopped*: a row in ``th_rm_stopped``
beside its tracking row names the event (its notification id and topic), the error and
when. It is read under the same lock (``SqlTransaction.stopped``) and written or removed
in the same transaction as the position (``stop``/``resume``), so every process — a
``tallyhub projections status`` beside a running ``worker`` — sees one answer. A store
made before that table existed works without it (nothing is stopped) until the first
stop creates it; ``tallyhub init`` creates it too.

Each projection's tables are built at a *schema version* the projection declares
(``Schema``); ``th_rm_schema`` keeps the version each projection's tables were built with
(tables made before the table existed are version 1). :meth:`SqlStore.upgrade` brings
every projection to the version this code declares: one whose stored version differs
(or whose tables are missing) has its tables dropped and created anew, its position set
to zero and its stop mark cleared, all in one transaction under its tracking lock (and,
on PostgreSQL, the DDL advisory lock), so one process does it and every other one then
finds the version current. The runner replays the projection from the event log
afterwards: the read side is a projection of events, so nothing is lost.

SQL is written once with ``?`` placeholders; the same DDL works on both databases
(SQLite's type affinity reads ``BIGINT``/``TIMESTAMPTZ``/``DOUBLE PRECISION`` sensibly).
Timestamps go in as UTC ISO text on SQLite and as ``timestamptz`` on PostgreSQL and
always come out as tz-aware UTC datetimes. Tables are created only by ``create_tables``.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TRACKING_TABLE = "th_rm_tracking"
STOPS_TABLE = "th_rm_stopped"
SCHEMA_TABLE = "th_rm_schema"
UNVERSIONED = 1  # the version of tables built before th_rm_schema existed

_TRACKING_DDL = f"CREATE TABLE IF NOT EXISTS {TRACKING_TABLE} ( name TEXT PRIMARY KEY, position BIGINT NOT NULL)"
_STOPS_DDL = (
    f"CREATE TABLE IF NOT EXISTS {STOPS_TABLE} ("
    " name TEXT PRIMARY KEY,"
    " position BIGINT NOT NULL,"  # the notification id of the event it could not apply
    " topic TEXT NOT NULL,"
    " error TEXT NOT NULL,"
    " stopped_on TIMESTAMPTZ NOT NULL)"
)

_SCHEMA_DDL = f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} ( name TEXT PRIMARY KEY, version INTEGER NOT NULL)"


@dataclass(frozen=True)
class Schema:
    """A projection's tables as this code builds them, at the version its projection declares."""

    name: str  # the projection's name (its tracking row)
    version: int
    tables: tuple[str, ...]
    ddl: tuple[str, ...]


@dataclass(frozen=True)
class Stop:
    """Why a projection stopped: the event it could not apply, and the error."""

    position: int  # the event's notification id; the projection's own position is below it
    topic: str
    error: str  # exception class and the first line of its message
    stopped_on: datetime


class SqlTransaction:
    """One open write transaction holding the lock on one projection's tracking row."""

    def __init__(self, store: SqlStore, cursor: Any, name: str, position: int, stopped: Stop | None = None) -> None:
        self.store = store
        self.name = name
        self.position = position
        self.stopped = stopped
        self._cursor = cursor

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._cursor.execute(self.store.dialect(sql), params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            self._cursor.executemany(self.store.dialect(sql), rows)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows read inside this transaction (what it wrote so far included)."""
        self._cursor.execute(self.store.dialect(sql), params)
        return list(self._cursor.fetchall())

    def advance(self, position: int) -> None:
        """Move the tracking position forward (committed with the view rows)."""
        if position <= self.position:
            raise ValueError(f"tracking position of {self.name!r} must grow: {self.position} -> {position}")
        self._set(position)

    def reset(self) -> None:
        """Back to zero, for a rebuild (committed with the emptied view)."""
        self._set(0)

    def stop(self, stop: Stop) -> None:
        """Mark the projection stopped at ``stop.position`` (committed with this transaction)."""
        self.store.ensure_stops_table(self._cursor)
        self.execute(
            f"INSERT INTO {STOPS_TABLE} (name, position, topic, error, stopped_on) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET position = excluded.position, topic = excluded.topic,"
            " error = excluded.error, stopped_on = excluded.stopped_on",
            (self.name, stop.position, stop.topic, stop.error, self.store.to_db_time(stop.stopped_on)),
        )
        self.stopped = stop

    def resume(self) -> None:
        """Clear the stop mark, if any (committed with this transaction)."""
        if self.stopped is not None:
            self.execute(f"DELETE FROM {STOPS_TABLE} WHERE name = ?", (self.name,))
            self.stopped = None

    def _set(self, position: int) -> None:
        self.execute(f"UPDATE {TRACKING_TABLE} SET position = ? WHERE name = ?", (position, self.name))
        self.position = position


class SqlStore:
    """What SQLite and PostgreSQL have in common; subclasses open connections and lock."""

    kind: str
    _has_stops_table = False  # known to exist (tables are never dropped); looked for until then

    def dialect(self, sql: str) -> str:
        return sql

    def is_transient(self, exc: BaseException) -> bool:
        """Whether ``exc`` says the database could not be used just now (not that an event is bad)."""
        return False

    def ensure_stops_table(self, cursor: Any) -> None:
        if not self._has_stops_table:
            cursor.execute(_STOPS_DDL)
            self._has_stops_table = True

    def _stops_table_exists(self, lookup: Any) -> bool:
        if not self._has_stops_table:
            self._has_stops_table = bool(lookup(self._table_lookup_sql(), (STOPS_TABLE,)))
        return self._has_stops_table

    def _table_lookup_sql(self) -> str:
        raise NotImplementedError

    def _read_stop(self, cursor: Any, name: str) -> Stop | None:
        def lookup(sql: str, params: Sequence[Any]) -> Any:
            cursor.execute(sql, params)
            row = cursor.fetchone()
            return row is not None and row[0] is not None

        if not self._stops_table_exists(lookup):
            return None
        cursor.execute(
            self.dialect(f"SELECT position, topic, error, stopped_on FROM {STOPS_TABLE} WHERE name = ?"), (name,)
        )
        row = cursor.fetchone()
        return None if row is None else self._stop_of(row)

    def _stop_of(self, row: Sequence[Any]) -> Stop:
        stopped_on = self.from_db_time(row[3])
        assert stopped_on is not None
        return Stop(int(row[0]), row[1], row[2], stopped_on)

    def to_db_time(self, value: datetime | None) -> Any:
        return None if value is None else value.astimezone(UTC)

    def from_db_time(self, value: Any) -> datetime | None:
        return None if value is None else value.astimezone(UTC)

    def create_tables(self, ddl: Sequence[str] = ()) -> None:
        """Create the tracking table and the given view tables (idempotent)."""
        raise NotImplementedError

    def upgrade(self, schemas: Sequence[Schema]) -> list[str]:
        """Bring each projection's tables to its schema's version (see the module docstring);
        the names of the projections whose tables were built anew, to be replayed."""
        rebuilt = []
        stored = self._stored_versions()
        for schema in schemas:
            if stored.get(schema.name) == schema.version:
                continue  # current: no lock taken (a runner may hold it, busy applying)
            with self._schema_lock(schema.name) as cursor:
                if self._upgrade(cursor, schema):
                    rebuilt.append(schema.name)
        return rebuilt

    def _stored_versions(self) -> dict[str, int]:
        def lookup(sql: str, params: Sequence[Any]) -> Any:
            rows = self.query(sql, params)
            return rows and rows[0][0] is not None

        if not lookup(self._table_lookup_sql(), (SCHEMA_TABLE,)):
            return {}
        return {name: int(version) for name, version in self.query(f"SELECT name, version FROM {SCHEMA_TABLE}")}

    def _schema_lock(self, name: str) -> Any:
        """A transaction holding the DDL lock and projection ``name``'s tracking lock; its cursor."""
        raise NotImplementedError

    def _upgrade(self, cursor: Any, schema: Schema) -> bool:
        def exists(table: str) -> bool:
            cursor.execute(self._table_lookup_sql(), (table,))
            row = cursor.fetchone()
            return row is not None and row[0] is not None

        cursor.execute(_SCHEMA_DDL)
        cursor.execute(self.dialect(f"SELECT version FROM {SCHEMA_TABLE} WHERE name = ?"), (schema.name,))
        row = cursor.fetchone()
        present = [exists(table) for table in schema.tables]
        stored = (int(row[0]) if row is not None else UNVERSIONED) if all(present) else None
        if stored != schema.version:
            for table in schema.tables:
                cursor.execute(f"DROP TABLE IF EXISTS {table}")
            for statement in schema.ddl:
                cursor.execute(statement)
            self.ensure_stops_table(cursor)
            cursor.execute(self.dialect(f"DELETE FROM {STOPS_TABLE} WHERE name = ?"), (schema.name,))
            cursor.execute(self.dialect(f"UPDATE {TRACKING_TABLE} SET position = 0 WHERE name = ?"), (schema.name,))
        if row is None or stored != schema.version:
            cursor.execute(
                self.dialect(
                    f"INSERT INTO {SCHEMA_TABLE} (name, version) VALUES (?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET version = excluded.version"
                ),
                (schema.name, schema.version),
            )
        return any(present) and stored != schema.version  # rows were there: a replay is due

    @contextmanager
    def tracked(self, name: str, *, wait: bool = True) -> Iterator[SqlTransaction | None]:
        """A write transaction for projection ``name``; ``None`` if busy and not ``wait``."""
        raise NotImplementedError
        yield None

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def positions(self) -> dict[str, int]:
        return {name: position for name, position in self.query(f"SELECT name, position FROM {TRACKING_TABLE}")}

    def stops(self) -> dict[str, Stop]:
        """Every stopped projection, as committed (any process)."""

        def lookup(sql: str, params: Sequence[Any]) -> Any:
            rows = self.query(sql, params)
            return rows and rows[0][0] is not None

        if not self._stops_table_exists(lookup):
            return {}
        rows = self.query(f"SELECT name, position, topic, error, stopped_on FROM {STOPS_TABLE}")
        return {row[0]: self._stop_of(row[1:]) for row in rows}

    def close(self) -> None:
        raise NotImplementedError


@dataclass(eq=False)
class _ThreadConnection:
    """One thread's SQLite connection, held in its thread-local (see ``_connection``)."""

    conn: sqlite3.Connection


class SqliteStore(SqlStore):
    """One file, one connection per thread, WAL; writers serialise on ``BEGIN IMMEDIATE``."""

    kind = "sqlite"

    def __init__(self, path: Path | str, *, busy_timeout_seconds: float = 30.0) -> None:
        self.path = str(path)
        self._timeout = busy_timeout_seconds
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.RLock()  # reentrant: a thread's end may close its connection at any point
        self._second_texts: dict[tuple[int, ...], str] = {}  # to_db_time's: a second's text, by the second

    def is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError)  # locked, busy, disk I/O, no such table

    def _table_lookup_sql(self) -> str:
        return "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?"

    def to_db_time(self, value: datetime | None) -> Any:
        """``value`` in UTC as ``isoformat(timespec="microseconds")`` writes it (fixed width: the
        text up to the second is its first 20 characters). That text is kept for the last few
        hundred seconds written (a read model writes several times a second, and the same
        hours): for a kept second only the microseconds are formatted, half the instructions."""
        if value is None:
            return None
        if value.tzinfo is not UTC:  # events are stamped in UTC: most values need no conversion
            value = value.astimezone(UTC)
        kept = self._second_texts
        second = (value.year, value.month, value.day, value.hour, value.minute, value.second)
        prefix = kept.get(second)
        if prefix is None:
            text = value.isoformat(timespec="microseconds")
            if len(kept) >= 256:  # a cache (threads may share it: each entry is a fact, losing one is harmless)
                kept.clear()
            kept[second] = text[:20]
            return text
        return f"{prefix}{value.microsecond:06d}+00:00"

    def from_db_time(self, value: Any) -> datetime | None:
        return None if value is None else datetime.fromisoformat(value).astimezone(UTC)

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection. It is closed when the thread ends: the server's worker
        threads come and go, and a connection kept for a thread gone held its file
        descriptors and page cache for good (the soak's growth, docs/reliability.md)."""
        held = getattr(self._local, "held", None)
        if held is None:
            conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            held = self._local.held = _ThreadConnection(conn)
            weakref.finalize(held, self._forget, conn)  # runs when the thread's locals are dropped
            with self._lock:
                self._connections.append(conn)
        return held.conn

    def _forget(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            if conn in self._connections:
                self._connections.remove(conn)
        conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        conn = self._connection()
        cursor = conn.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            yield cursor
        except BaseException:
            conn.rollback()
            raise
        else:
            conn.commit()
        finally:
            cursor.close()

    def create_tables(self, ddl: Sequence[str] = ()) -> None:
        with self._transaction() as cursor:
            for statement in (_TRACKING_DDL, _STOPS_DDL, _SCHEMA_DDL, *ddl):
                cursor.execute(statement)

    @contextmanager
    def _schema_lock(self, name: str) -> Iterator[Any]:
        with self._transaction() as cursor:  # BEGIN IMMEDIATE: the one writer
            _lock_position(cursor, name, "?")
            yield cursor

    @contextmanager
    def tracked(self, name: str, *, wait: bool = True) -> Iterator[SqlTransaction | None]:
        # SQLite has one writer at a time: BEGIN IMMEDIATE is the lock, so ``wait`` is moot.
        with self._transaction() as cursor:
            position = _lock_position(cursor, name, "?")
            yield SqlTransaction(self, cursor, name, position, self._read_stop(cursor, name))

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._connection().execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()


class PostgresStore(SqlStore):
    """A small psycopg pool whose connections use ``schema`` as their search path."""

    kind = "postgres"

    def __init__(self, conninfo: str, schema: str, *, pool_size: int = 4) -> None:
        from psycopg_pool import ConnectionPool

        if not schema.replace("_", "").isalnum():
            raise ValueError("schema must be letters, digits and underscores")
        self.schema = schema
        self._pool = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True, "options": f"-c search_path={schema}"},
            open=True,
        )

    def dialect(self, sql: str) -> str:
        return sql.replace("?", "%s")

    def is_transient(self, exc: BaseException) -> bool:
        import psycopg

        # connection lost or refused, pool timeout, lock or statement timeout, deadlock, serialisation
        return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))

    def _table_lookup_sql(self) -> str:
        return "SELECT to_regclass(%s)"

    def _lock_key(self, name: str) -> int:
        digest = hashlib.blake2b(f"tallyhub-read-models:{self.schema}:{name}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big", signed=True)

    def create_tables(self, ddl: Sequence[str] = ()) -> None:
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key("ddl"),))
            cursor.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            for statement in (_TRACKING_DDL, _STOPS_DDL, _SCHEMA_DDL, *ddl):
                cursor.execute(statement)

    @contextmanager
    def _schema_lock(self, name: str) -> Iterator[Any]:
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key("ddl"),))
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key(name),))
            _lock_position(cursor, name, "%s", for_update=True)
            yield cursor

    @contextmanager
    def tracked(self, name: str, *, wait: bool = True) -> Iterator[SqlTransaction | None]:
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
            if wait:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key(name),))
            else:
                cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", (self._lock_key(name),))
                row = cursor.fetchone()
                if not (row and row[0]):
                    yield None
                    return
            position = _lock_position(cursor, name, "%s", for_update=True)
            yield SqlTransaction(self, cursor, name, position, self._read_stop(cursor, name))

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._pool.connection() as conn:
            return conn.execute(self.dialect(sql), params).fetchall()

    def close(self) -> None:
        self._pool.close()


def _lock_position(cursor: Any, name: str, mark: str, *, for_update: bool = False) -> int:
    cursor.execute(
        f"INSERT INTO {TRACKING_TABLE} (name, position) VALUES ({mark}, 0) ON CONFLICT (name) DO NOTHING", (name,)
    )
    suffix = " FOR UPDATE" if for_update else ""
    cursor.execute(f"SELECT position FROM {TRACKING_TABLE} WHERE name = {mark}{suffix}", (name,))
    row = cursor.fetchone()
    assert row is not None
    return int(row[0])
