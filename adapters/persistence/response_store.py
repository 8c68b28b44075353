"""The response store's rows (application/stored_responses.py): one row per stored response,
``stored_responses``, in the same database as the event store (SQLite in embedded mode,
the deployment's schema on PostgreSQL), or in memory for the in-memory event store.

A row is ``(response_id, account_id, created_at, envelope)``; the envelope is the sealed
response and conversation, and the only column with content in it.

Invariants kept here:
- a row is written once under its response id and updated only by master-key rotation
  (``replace``: the same content under a fresh envelope, only if the row is unchanged); every read and delete
  names the account as well as the id, so no query reaches another account's row;
- the table is created by ``tallyhub init`` or by the first process that needs it;
  PostgreSQL creates it under a transaction-scoped advisory lock, so processes starting
  together never race on DDL; a purge of a store without the table creates nothing;
- SQLite overwrites what it deletes (``secure_delete``), so a deleted or purged envelope's
  bytes do not stay in the file's free pages. PostgreSQL leaves dead row versions until
  (auto)vacuum reclaims them; what it keeps elsewhere (WAL archive, replicas, backups) is
  beyond this module.
"""

import json
import os
import threading
from typing import Any
from uuid import UUID
from weakref import WeakKeyDictionary

from adapters.crypto.aes_gcm import AesGcmKeyVault
from adapters.persistence.side_tables import PostgresSideTable, SqliteSideTable, side_rows_for
from adapters.settings import Settings
from application.ledger import Ledger
from application.ports import SystemClock
from application.stored_responses import ResponseRows, StoredResponses, StoredRow

# psycopg is imported by the PostgreSQL rows' methods only, so that SQLite mode (every CLI
# command, an embedded serve) never pays for importing it (issue 21).
TABLE = "stored_responses"
COLUMNS = "response_id, account_id, created_at, envelope"
# The in-memory store's rows, one set per in-memory event store (every StoredResponses built on it sees them).
_IN_MEMORY: "WeakKeyDictionary[Any, ResponseRows]" = WeakKeyDictionary()


def build_stored_responses(settings: Settings, ledger: Ledger | None) -> StoredResponses:
    """The response store of ``settings`` beside ``ledger``'s events, sealing with its vault
    (always built; ``enabled`` only with TALLYHUB_RESPONSES_STORE=on). Without a ledger (a
    test's read-models-only services): an empty store, off."""
    if ledger is None:
        return StoredResponses(InMemoryResponseRows(), AesGcmKeyVault(os.urandom(32)), SystemClock(), enabled=False)
    return StoredResponses(
        response_rows_for(ledger.recorder),
        ledger.vault,
        ledger.clock,
        enabled=settings.responses_store,
        retention_days=settings.responses_retention_days,
    )


def response_rows_for(recorder: Any) -> ResponseRows:
    """The rows beside ``recorder``'s events: same database, same connections."""
    return side_rows_for(recorder, SqliteResponseRows, PostgresResponseRows, InMemoryResponseRows, _IN_MEMORY)


def _text(envelope: dict[str, str]) -> str:
    return json.dumps(envelope, sort_keys=True, separators=(",", ":"))


def _row(response_id: str, account_id: str, created_at: float, envelope: str) -> StoredRow:
    return StoredRow(response_id, UUID(account_id), float(created_at), json.loads(envelope))


class InMemoryResponseRows:
    """For the in-memory event store: rows in a dict, gone with the process (as its events are)."""

    def __init__(self) -> None:
        self._rows: dict[str, StoredRow] = {}
        self._lock = threading.Lock()

    def create_table(self) -> None:
        pass

    def add(self, row: StoredRow) -> bool:
        with self._lock:
            if row.response_id in self._rows:
                return False
            self._rows[row.response_id] = row
            return True

    def get(self, response_id: str, account_id: UUID, *, not_before: float) -> StoredRow | None:
        row = self._rows.get(response_id)
        if row is None or row.account_id != account_id or row.created_at < not_before:
            return None
        return row

    def delete(self, response_id: str, account_id: UUID) -> bool:
        with self._lock:
            row = self._rows.get(response_id)
            if row is None or row.account_id != account_id:
                return False
            del self._rows[response_id]
            return True

    def purge(self, *, before: float) -> int:
        with self._lock:
            doomed = [key for key, row in self._rows.items() if row.created_at < before]
            for key in doomed:
                del self._rows[key]
            return len(doomed)

    def all(self) -> list[StoredRow]:
        return sorted(self._rows.values(), key=lambda row: row.response_id)

    def replace(self, row: StoredRow, envelope: dict[str, str]) -> bool:
        with self._lock:
            if self._rows.get(row.response_id) != row:
                return False
            self._rows[row.response_id] = StoredRow(row.response_id, row.account_id, row.created_at, envelope)
            return True


class SqliteResponseRows(SqliteSideTable):
    name = TABLE
    definition = (
        "response_id TEXT PRIMARY KEY, account_id TEXT NOT NULL, created_at REAL NOT NULL, envelope TEXT NOT NULL"
    )
    indexes = (("created_at", "created_at"),)

    def add(self, row: StoredRow) -> bool:
        self._ensure()
        with self.datastore.transaction(commit=True) as c:
            c.execute(
                f"INSERT OR IGNORE INTO {TABLE} ({COLUMNS}) VALUES (?, ?, ?, ?)",
                (row.response_id, str(row.account_id), row.created_at, _text(row.envelope)),
            )
            c.execute("SELECT changes()")
            return bool(c.fetchone()[0])

    def get(self, response_id: str, account_id: UUID, *, not_before: float) -> StoredRow | None:
        if not self._exists():
            return None
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT {COLUMNS} FROM {TABLE} WHERE response_id = ? AND account_id = ? AND created_at >= ?",
                (response_id, str(account_id), not_before),
            )
            found = c.fetchone()
        return _row(*found) if found else None

    def delete(self, response_id: str, account_id: UUID) -> bool:
        if not self._exists():
            return False
        return (
            self._deleted(
                f"DELETE FROM {TABLE} WHERE response_id = ? AND account_id = ?", (response_id, str(account_id))
            )
            > 0
        )

    def purge(self, *, before: float) -> int:
        if not self._exists():
            return 0
        return self._deleted(f"DELETE FROM {TABLE} WHERE created_at < ?", (before,))

    def _deleted(self, statement: str, parameters: tuple[Any, ...]) -> int:
        with self.datastore.transaction(commit=True) as c:
            c.execute("PRAGMA secure_delete = ON")  # the envelope's bytes are overwritten, not freed
            c.execute(statement, parameters)
            c.execute("SELECT changes()")
            deleted = int(c.fetchone()[0])
            c.execute("PRAGMA secure_delete = OFF")
        return deleted

    def all(self) -> list[StoredRow]:
        if not self._exists():
            return []
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT {COLUMNS} FROM {TABLE} ORDER BY response_id")
            return [_row(*found) for found in c.fetchall()]

    def replace(self, row: StoredRow, envelope: dict[str, str]) -> bool:
        with self.datastore.transaction(commit=True) as c:
            c.execute(
                f"UPDATE {TABLE} SET envelope = ? WHERE response_id = ? AND account_id = ? AND envelope = ?",
                (_text(envelope), row.response_id, str(row.account_id), _text(row.envelope)),
            )
            c.execute("SELECT changes()")
            return bool(c.fetchone()[0])


class PostgresResponseRows(PostgresSideTable):
    name = TABLE
    definition = (
        "response_id text PRIMARY KEY, account_id uuid NOT NULL, "
        "created_at double precision NOT NULL, envelope text NOT NULL"
    )
    indexes = (("created_at", "created_at"),)

    def add(self, row: StoredRow) -> bool:
        from psycopg.sql import SQL

        self._ensure()
        with self.datastore.transaction(commit=True) as c:
            c.execute(
                SQL("INSERT INTO {} ({}) VALUES (%s, %s, %s, %s) ON CONFLICT (response_id) DO NOTHING").format(
                    self.table, SQL(COLUMNS)
                ),
                (row.response_id, row.account_id, row.created_at, _text(row.envelope)),
            )
            return c.rowcount == 1

    def get(self, response_id: str, account_id: UUID, *, not_before: float) -> StoredRow | None:
        from psycopg.sql import SQL

        if not self._exists():
            return None
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                SQL("SELECT {} FROM {} WHERE response_id = %s AND account_id = %s AND created_at >= %s").format(
                    SQL(COLUMNS), self.table
                ),
                (response_id, account_id, not_before),
            )
            found = c.fetchone()
        return _pg_row(found) if found else None

    def delete(self, response_id: str, account_id: UUID) -> bool:
        from psycopg.sql import SQL

        if not self._exists():
            return False
        with self.datastore.transaction(commit=True) as c:
            c.execute(
                SQL("DELETE FROM {} WHERE response_id = %s AND account_id = %s").format(self.table),
                (response_id, account_id),
            )
            return c.rowcount > 0

    def purge(self, *, before: float) -> int:
        from psycopg.sql import SQL

        if not self._exists():
            return 0
        with self.datastore.transaction(commit=True) as c:
            c.execute(SQL("DELETE FROM {} WHERE created_at < %s").format(self.table), (before,))
            return c.rowcount

    def all(self) -> list[StoredRow]:
        from psycopg.sql import SQL

        if not self._exists():
            return []
        with self.datastore.transaction(commit=False) as c:
            c.execute(SQL("SELECT {} FROM {} ORDER BY response_id").format(SQL(COLUMNS), self.table))
            return [_pg_row(found) for found in c.fetchall()]

    def replace(self, row: StoredRow, envelope: dict[str, str]) -> bool:
        from psycopg.sql import SQL

        with self.datastore.transaction(commit=True) as c:
            c.execute(
                SQL("UPDATE {} SET envelope = %s WHERE response_id = %s AND account_id = %s AND envelope = %s").format(
                    self.table
                ),
                (_text(envelope), row.response_id, row.account_id, _text(row.envelope)),
            )
            return c.rowcount == 1


def _pg_row(found: dict[str, Any]) -> StoredRow:
    return StoredRow(
        found["response_id"], UUID(str(found["account_id"])), float(found["created_at"]), json.loads(found["envelope"])
    )


__all__ = [
    "InMemoryResponseRows",
    "build_stored_responses",
    "PostgresResponseRows",
    "SqliteResponseRows",
    "response_rows_for",
]
