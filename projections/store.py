"""The SQL store shared by the read models: SQLite (its own file, WAL) or PostgreSQL.

Invariant kept here: a projection's tracking position lives in ``th_rm_tracking`` in the
same database as its view rows, and :meth:`SqlStore.tracked` is the only way to write
either. It opens one transaction, locks the projection's tracking row (SQLite: ``BEGIN
IMMEDIATE``; PostgreSQL: an advisory transaction lock, then ``SELECT … FOR UPDATE``),
and commits the view rows together with the advanced position — or rolls both back.
So an event at or below the tracked position is never applied twice, and a crash
mid-batch loses nothing.

SQL is written once with ``?`` placeholders; the same DDL works on both databases
(SQLite's type affinity reads ``BIGINT``/``TIMESTAMPTZ``/``DOUBLE PRECISION`` sensibly).
Timestamps go in as UTC ISO text on SQLite and as ``timestamptz`` on PostgreSQL and
always come out as tz-aware UTC datetimes. Tables are created only by ``create_tables``.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

TRACKING_TABLE = "th_rm_tracking"

_TRACKING_DDL = (
    f"CREATE TABLE IF NOT EXISTS {TRACKING_TABLE} ("
    " name TEXT PRIMARY KEY,"
    " position BIGINT NOT NULL)"
)


class SqlTransaction:
    """One open write transaction holding the lock on one projection's tracking row."""

    def __init__(self, store: "SqlStore", cursor: Any, name: str, position: int) -> None:
        self.store = store
        self.name = name
        self.position = position
        self._cursor = cursor

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._cursor.execute(self.store.dialect(sql), params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            self._cursor.executemany(self.store.dialect(sql), rows)

    def advance(self, position: int) -> None:
        """Move the tracking position forward (committed with the view rows)."""
        if position <= self.position:
            raise ValueError(f"tracking position of {self.name!r} must grow: {self.position} -> {position}")
        self._set(position)

    def reset(self) -> None:
        """Back to zero, for a rebuild (committed with the emptied view)."""
        self._set(0)

    def _set(self, position: int) -> None:
        self.execute(f"UPDATE {TRACKING_TABLE} SET position = ? WHERE name = ?", (position, self.name))
        self.position = position


class SqlStore:
    """What SQLite and PostgreSQL have in common; subclasses open connections and lock."""

    kind: str

    def dialect(self, sql: str) -> str:
        return sql

    def to_db_time(self, value: datetime | None) -> Any:
        return None if value is None else value.astimezone(timezone.utc)

    def from_db_time(self, value: Any) -> datetime | None:
        return None if value is None else value.astimezone(timezone.utc)

    def create_tables(self, ddl: Sequence[str] = ()) -> None:
        """Create the tracking table and the given view tables (idempotent)."""
        raise NotImplementedError

    @contextmanager
    def tracked(self, name: str, *, wait: bool = True) -> Iterator[SqlTransaction | None]:
        """A write transaction for projection ``name``; ``None`` if busy and not ``wait``."""
        raise NotImplementedError
        yield None

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def positions(self) -> dict[str, int]:
        return {name: position for name, position in self.query(f"SELECT name, position FROM {TRACKING_TABLE}")}

    def close(self) -> None:
        raise NotImplementedError


class SqliteStore(SqlStore):
    """One file, one connection per thread, WAL; writers serialise on ``BEGIN IMMEDIATE``."""

    kind = "sqlite"

    def __init__(self, path: Path | str, *, busy_timeout_seconds: float = 30.0) -> None:
        self.path = str(path)
        self._timeout = busy_timeout_seconds
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def to_db_time(self, value: datetime | None) -> Any:
        return None if value is None else value.astimezone(timezone.utc).isoformat(timespec="microseconds")

    def from_db_time(self, value: Any) -> datetime | None:
        return None if value is None else datetime.fromisoformat(value).astimezone(timezone.utc)

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

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
            for statement in (_TRACKING_DDL, *ddl):
                cursor.execute(statement)

    @contextmanager
    def tracked(self, name: str, *, wait: bool = True) -> Iterator[SqlTransaction | None]:
        # SQLite has one writer at a time: BEGIN IMMEDIATE is the lock, so ``wait`` is moot.
        with self._transaction() as cursor:
            yield SqlTransaction(self, cursor, name, _lock_position(cursor, name, "?"))

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

    def _lock_key(self, name: str) -> int:
        digest = hashlib.blake2b(f"tallyhub-read-models:{self.schema}:{name}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big", signed=True)

    def create_tables(self, ddl: Sequence[str] = ()) -> None:
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key("ddl"),))
            cursor.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            for statement in (_TRACKING_DDL, *ddl):
                cursor.execute(statement)

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
            yield SqlTransaction(self, cursor, name, _lock_position(cursor, name, "%s", for_update=True))

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
