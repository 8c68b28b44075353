"""Tables kept beside the event store's own (secrets, stored responses, webhook deliveries):
whether one exists yet, and creating one on PostgreSQL so that processes starting together
never race on DDL (SQLite's database lock orders concurrent creators by itself)."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from eventsourcing.postgres import PostgresDatastore
from eventsourcing.sqlite import SQLiteDatastore


def sqlite_table_exists(datastore: SQLiteDatastore, table: str) -> bool:
    with datastore.transaction(commit=False) as c:
        c.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
        return c.fetchone() is not None


def postgres_table_exists(datastore: PostgresDatastore, schema: str, table: str) -> bool:
    with datastore.transaction(commit=False) as c:
        c.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = %s", (schema, table)
        )
        return c.fetchone() is not None


@contextmanager
def postgres_creating(datastore: PostgresDatastore, schema: str, table: str) -> Iterator[Any]:
    """A committing transaction's cursor, holding ``schema.table``'s creation lock (one creator at a time)."""
    with datastore.transaction(commit=True) as c:
        c.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"tallyhub:{schema}.{table}",))
        yield c
