"""Tables kept beside the event store's own (secrets, stored responses, webhook deliveries,
background jobs): what their rows classes share, one base class per database.

A rows class names its table (``name``), the table's column definitions in its database's
types (``definition``) and its indexes (``indexes``: ``(suffix, columns)``, the index named
``<name>_<suffix>``); the base class gives it ``create_table``, ``_exists`` and ``_ensure``
and writes a statement once for both databases (``_sql``: ``{table}`` the table, ``{p}`` the
driver's placeholder).

Invariants kept here:
- a table is looked for until it is found (or created), then taken as there: a read of a
  store without it finds nothing and creates nothing, and a write creates it first;
- PostgreSQL creates a table under a transaction-scoped advisory lock on its name, so
  processes starting together never race on DDL (SQLite's database lock orders concurrent
  creators by itself).
"""

import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, TypeGuard, TypeVar
from weakref import WeakKeyDictionary

from eventsourcing.sqlite import SQLiteDatastore

# psycopg (with eventsourcing.postgres) is imported by the PostgreSQL classes' methods only:
# SQLite mode (every CLI command, an embedded serve) never pays for it (issue 21).
if TYPE_CHECKING:
    from eventsourcing.postgres import PostgresDatastore
    from psycopg.sql import Composed

Rows = TypeVar("Rows")


def side_rows_for(
    recorder: Any,
    sqlite: Callable[[SQLiteDatastore], Rows],
    postgres: Callable[["PostgresDatastore"], Rows],
    in_memory: Callable[[], Rows],
    shared: "WeakKeyDictionary[Any, Rows] | None" = None,
) -> Rows:
    """The rows beside ``recorder``'s events: same database, same connections; beside an
    in-memory event store, fresh rows, or with ``shared`` one set per recorder (every store
    built on it sees them)."""
    datastore = getattr(recorder, "datastore", None)
    if isinstance(datastore, SQLiteDatastore):
        return sqlite(datastore)
    if is_postgres_datastore(datastore):
        return postgres(datastore)
    if recorder is None or shared is None:
        return in_memory()
    rows = shared.get(recorder)
    if rows is None:
        rows = shared[recorder] = in_memory()
    return rows


def is_postgres_datastore(datastore: Any) -> "TypeGuard[PostgresDatastore]":
    """Whether ``datastore`` is eventsourcing's PostgreSQL one, without importing psycopg: an
    instance exists only once its module is imported, so until then the answer is no."""
    module = sys.modules.get("eventsourcing.postgres")
    return module is not None and isinstance(datastore, module.PostgresDatastore)


def sqlite_table_exists(datastore: SQLiteDatastore, table: str) -> bool:
    with datastore.transaction(commit=False) as c:
        c.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
        return c.fetchone() is not None


def postgres_table_exists(datastore: "PostgresDatastore", schema: str, table: str) -> bool:
    with datastore.transaction(commit=False) as c:
        c.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = %s", (schema, table)
        )
        return c.fetchone() is not None


@contextmanager
def postgres_creating(datastore: "PostgresDatastore", schema: str, table: str) -> Iterator[Any]:
    """A committing transaction's cursor, holding ``schema.table``'s creation lock (one creator at a time)."""
    with datastore.transaction(commit=True) as c:
        c.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"tallyhub:{schema}.{table}",))
        yield c


class SideTable:
    """The rows of one table beside the events, in the event store's own database."""

    name: ClassVar[str]
    definition: ClassVar[str]
    indexes: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self, datastore: Any) -> None:
        self.datastore = datastore
        self._ready = False

    def create_table(self) -> None:
        with self._creating() as c:
            c.execute(self._sql(f"CREATE TABLE IF NOT EXISTS {{table}} ({self.definition})"))
            for suffix, columns in self.indexes:
                c.execute(self._index(suffix, columns))
        self._ready = True

    def _exists(self) -> bool:
        if not self._ready:
            self._ready = self._table_exists()
        return self._ready

    def _ensure(self) -> None:
        if not self._exists():
            self.create_table()

    def _table_exists(self) -> bool:
        raise NotImplementedError

    def _creating(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _sql(self, statement: str) -> Any:
        """``statement`` for this database: ``{table}`` names the table, ``{p}`` is a parameter."""
        raise NotImplementedError

    def _index(self, suffix: str, columns: str) -> Any:
        raise NotImplementedError

    def _changes(self, cursor: Any) -> int:
        """How many rows the statement just executed on ``cursor`` changed."""
        raise NotImplementedError


class SqliteSideTable(SideTable):
    datastore: SQLiteDatastore

    def __init__(self, datastore: SQLiteDatastore) -> None:
        super().__init__(datastore)

    def _table_exists(self) -> bool:
        return sqlite_table_exists(self.datastore, self.name)

    def _creating(self) -> AbstractContextManager[Any]:
        return self.datastore.transaction(commit=True)  # SQLite's database lock orders concurrent creators

    def _sql(self, statement: str) -> str:
        return statement.format(table=self.name, p="?")

    def _index(self, suffix: str, columns: str) -> str:
        return f"CREATE INDEX IF NOT EXISTS {self.name}_{suffix} ON {self.name} ({columns})"

    def _changes(self, cursor: Any) -> int:
        cursor.execute("SELECT changes()")
        return int(cursor.fetchone()[0])


class PostgresSideTable(SideTable):
    datastore: "PostgresDatastore"

    def __init__(self, datastore: "PostgresDatastore") -> None:
        from psycopg.sql import SQL, Identifier

        super().__init__(datastore)
        self.schema = datastore.schema or "public"
        self.table = SQL("{}.{}").format(Identifier(self.schema), Identifier(self.name))

    def _table_exists(self) -> bool:
        return postgres_table_exists(self.datastore, self.schema, self.name)

    def _creating(self) -> AbstractContextManager[Any]:
        return postgres_creating(self.datastore, self.schema, self.name)

    def _sql(self, statement: str) -> "Composed":
        from psycopg.sql import SQL

        return SQL(statement.format(table="{table}", p="%s")).format(table=self.table)

    def _index(self, suffix: str, columns: str) -> "Composed":
        from psycopg.sql import SQL, Identifier

        return SQL(f"CREATE INDEX IF NOT EXISTS {{}} ON {{}} ({columns})").format(
            Identifier(f"{self.name}_{suffix}"), self.table
        )

    def _changes(self, cursor: Any) -> int:
        return int(cursor.rowcount)
