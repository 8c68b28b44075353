"""The secret store: one row per secret reference, holding the secret's current envelope,
in the same database as the event store (``ledger_secrets``), or in memory for the
in-memory (popo) store of unit tests.

Events name a secret by reference; its envelope lives only here, so it can be
re-encrypted in place and deleted, which the event history cannot be (crypto-shredding:
once no row holds a data key wrapped by a retired master key, that key opens nothing
current).

Invariants kept here:
- a row is written once under its reference (``add`` never overwrites: a reference names
  one plaintext for its whole life), replaced only by compare-and-set on its version,
  deleted by reference;
- the table is created by ``tallyhub init`` or, on a store made before it existed, by the
  first process that needs it: PostgreSQL creates it under a transaction-scoped advisory
  lock, so processes starting together never race on DDL;
- SQLite overwrites what it replaces or deletes (``secure_delete``) and ``scrub`` moves the
  write-ahead log into the main file and truncates it; PostgreSQL's ``scrub`` rewrites the
  table (``VACUUM FULL``) so no dead row version keeps an old envelope in the table's files.
  What a database keeps elsewhere (PostgreSQL's WAL archive, replicas, backups) is beyond
  this module.
"""

import json
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from eventsourcing.sqlite import SQLiteDatastore

from adapters.persistence.side_tables import PostgresSideTable, SqliteSideTable, is_postgres_datastore
from application.ports import SecretStore, StoredSecret

# psycopg is imported by the PostgreSQL rows' methods only, so that SQLite mode (every CLI
# command, an embedded serve) never pays for importing it (issue 21).
log = logging.getLogger("tallyhub.secrets")
TABLE = "ledger_secrets"
COLUMNS = "ref, envelope, version, created_at"


def secret_store_for(recorder: Any) -> SecretStore:
    """The store beside ``recorder``'s events: same database, same connections."""
    datastore = getattr(recorder, "datastore", None)
    if isinstance(datastore, SQLiteDatastore):
        return SqliteSecretStore(datastore)
    if is_postgres_datastore(datastore):
        return PostgresSecretStore(datastore)
    return InMemorySecretStore()


def _row(ref: str, envelope: str, version: int, created_at: float) -> StoredSecret:
    return StoredSecret(ref=ref, envelope=json.loads(envelope), version=int(version), created_at=float(created_at))


def _text(envelope: dict[str, str]) -> str:
    return json.dumps(envelope, sort_keys=True, separators=(",", ":"))


class InMemorySecretStore:
    """For the in-memory event store: rows in a dict, gone with the process (as its events are)."""

    def __init__(self) -> None:
        self._rows: dict[str, StoredSecret] = {}
        self._lock = threading.Lock()

    def create_table(self) -> None:
        pass

    def get(self, ref: str) -> StoredSecret | None:
        return self._rows.get(ref)

    def all(self) -> list[StoredSecret]:
        return sorted(self._rows.values(), key=lambda row: row.ref)

    def add(self, ref: str, envelope: dict[str, str]) -> bool:
        with self._lock:
            if ref in self._rows:
                return False
            self._rows[ref] = StoredSecret(ref, dict(envelope), 1, time.time())
            return True

    def replace(self, ref: str, envelope: dict[str, str], *, version: int) -> bool:
        with self._lock:
            row = self._rows.get(ref)
            if row is None or row.version != version:
                return False
            self._rows[ref] = StoredSecret(ref, dict(envelope), version + 1, row.created_at)
            return True

    def delete(self, refs: Iterable[str]) -> int:
        with self._lock:
            return sum(self._rows.pop(ref, None) is not None for ref in set(refs))

    def scrub(self) -> None:
        pass


class SqliteSecretStore(SqliteSideTable):
    name = TABLE
    definition = "ref TEXT PRIMARY KEY, envelope TEXT NOT NULL, version INTEGER NOT NULL, created_at REAL NOT NULL"

    def get(self, ref: str) -> StoredSecret | None:
        self._ensure()
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT {COLUMNS} FROM {TABLE} WHERE ref = ?", (ref,))
            found = c.fetchone()
        return _row(*found) if found else None

    def all(self) -> list[StoredSecret]:
        self._ensure()
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT {COLUMNS} FROM {TABLE} ORDER BY ref")
            return [_row(*found) for found in c.fetchall()]

    def add(self, ref: str, envelope: dict[str, str]) -> bool:
        self._ensure()
        with self.datastore.transaction(commit=True) as c:
            c.execute(
                f"INSERT OR IGNORE INTO {TABLE} ({COLUMNS}) VALUES (?, ?, 1, ?)", (ref, _text(envelope), time.time())
            )
            c.execute("SELECT changes()")
            return bool(c.fetchone()[0])

    def replace(self, ref: str, envelope: dict[str, str], *, version: int) -> bool:
        self._ensure()
        with self.datastore.transaction(commit=True) as c:
            c.execute("PRAGMA secure_delete = ON")  # the old envelope's bytes are overwritten, not freed
            c.execute(
                f"UPDATE {TABLE} SET envelope = ?, version = version + 1 WHERE ref = ? AND version = ?",
                (_text(envelope), ref, version),
            )
            c.execute("SELECT changes()")
            changed = bool(c.fetchone()[0])
            c.execute("PRAGMA secure_delete = OFF")
        return changed

    def delete(self, refs: Iterable[str]) -> int:
        refs = sorted(set(refs))
        if not refs:
            return 0
        self._ensure()
        with self.datastore.transaction(commit=True) as c:
            c.execute("PRAGMA secure_delete = ON")
            c.execute(f"DELETE FROM {TABLE} WHERE ref IN ({','.join('?' * len(refs))})", refs)
            c.execute("SELECT changes()")
            deleted = int(c.fetchone()[0])
            c.execute("PRAGMA secure_delete = OFF")
        return deleted

    def scrub(self) -> None:
        """Copy the write-ahead log into the main file and truncate it: the log's older frames
        held the replaced envelopes (the main file's copies were overwritten in place)."""
        with self.datastore.get_connection(commit=True) as connection:
            cursor = connection.cursor()
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            busy = cursor.fetchone()[0]
        if busy:
            log.warning(
                "the SQLite write-ahead log could not be emptied (a long read was in progress): replaced "
                "envelopes may remain in %s-wal until the next checkpoint; run `tallyhub secrets "
                "rotate-master` again when the gateway is quiet",
                self.datastore.pool.db_name,
            )


class PostgresSecretStore(PostgresSideTable):
    name = TABLE
    definition = (
        "ref text PRIMARY KEY, envelope text NOT NULL, version bigint NOT NULL, created_at double precision NOT NULL"
    )

    def get(self, ref: str) -> StoredSecret | None:
        from psycopg.sql import SQL

        self._ensure()
        with self.datastore.transaction(commit=False) as c:
            c.execute(SQL("SELECT {} FROM {} WHERE ref = %s").format(SQL(COLUMNS), self.table), (ref,))
            found = c.fetchone()
        return _row(**found) if found else None

    def all(self) -> list[StoredSecret]:
        from psycopg.sql import SQL

        self._ensure()
        with self.datastore.transaction(commit=False) as c:
            c.execute(SQL("SELECT {} FROM {} ORDER BY ref").format(SQL(COLUMNS), self.table))
            return [_row(**found) for found in c.fetchall()]

    def add(self, ref: str, envelope: dict[str, str]) -> bool:
        from psycopg.sql import SQL

        self._ensure()
        with self.datastore.transaction(commit=True) as c:
            c.execute(
                SQL("INSERT INTO {} ({}) VALUES (%s, %s, 1, %s) ON CONFLICT (ref) DO NOTHING").format(
                    self.table, SQL(COLUMNS)
                ),
                (ref, _text(envelope), time.time()),
            )
            return c.rowcount == 1

    def replace(self, ref: str, envelope: dict[str, str], *, version: int) -> bool:
        from psycopg.sql import SQL

        self._ensure()
        with self.datastore.transaction(commit=True) as c:
            c.execute(
                SQL("UPDATE {} SET envelope = %s, version = version + 1 WHERE ref = %s AND version = %s").format(
                    self.table
                ),
                (_text(envelope), ref, version),
            )
            return c.rowcount == 1

    def delete(self, refs: Iterable[str]) -> int:
        from psycopg.sql import SQL

        refs = sorted(set(refs))
        if not refs:
            return 0
        self._ensure()
        with self.datastore.transaction(commit=True) as c:
            c.execute(SQL("DELETE FROM {} WHERE ref = ANY(%s)").format(self.table), (refs,))
            return c.rowcount

    def scrub(self) -> None:
        """Rewrite the table: the dead row versions an UPDATE or DELETE leaves behind (each
        holding an old envelope) are not copied. Takes the table's lock for a moment."""
        from psycopg.sql import SQL

        self._ensure()
        with self.datastore.get_connection() as connection:  # autocommit: VACUUM runs outside a transaction
            connection.execute(SQL("VACUUM FULL {}").format(self.table))


__all__ = ["InMemorySecretStore", "PostgresSecretStore", "SqliteSecretStore", "secret_store_for"]
