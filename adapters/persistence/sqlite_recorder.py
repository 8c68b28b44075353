"""The SQLite event store's application recorder, inserting a whole batch in one statement.

eventsourcing's recorder runs one INSERT per event, and each call into SQLite lets go of
the interpreter lock and must win it back from the busy event loop. Here a batch is one
multi-row INSERT per ``ROWS_PER_STATEMENT`` events: a group commit of ten events makes one
call instead of ten. A batch of one statement (almost every one) is also its own
transaction: SQLite runs a statement outside BEGIN…COMMIT in a transaction of its own,
committed (and synced) before the call returns, or rolled back whole if any row is refused.
That spares the BEGIN and the COMMIT calls: 5 to 7 hand-overs of the interpreter lock
instead of 15 per batch, each of which, on a gateway's busy core, lets the event loop run
for up to a switch interval before the writer gets the core and the lock back (measured in
docs/performance.md, "Issue 21: where a group commit's milliseconds go"). The table, the
stored rows and their notification ids are exactly eventsourcing's: ids are rowids, and
inside the write transaction SQLite gives the rows of one statement consecutive rowids, the
last of which is ``lastrowid``.

``latest_version`` serves the group-commit writer's freshness check (one per account per
batch) with a single SELECT outside an explicit transaction, where eventsourcing's
``select_events`` costs three calls (BEGIN, SELECT, ROLLBACK).

``select_notifications`` reads eventsourcing's statement and builds the same ``Notification``
objects (equal field for field, the originator id a ``UUID`` equal to ``UUID(stored hex)``), but
from plain tuples and without the two generic constructors that made most of a row's cost: a
frozen dataclass's ``__init__`` (one ``object.__setattr__`` per field) and ``UUID(hex)``'s text
handling. An originator id that is not 32 characters (not ``UUID.hex``'s form) is parsed by
``UUID`` itself, which refuses what it always refused.

``insert_fenced`` is the ledger's last try of a change that lost every optimistic save to
other writers: read, decide and insert under the write lock (adapters/persistence/fence.py).
"""

from collections.abc import Sequence
from typing import Any
from uuid import UUID, SafeUUID

from eventsourcing.persistence import Notification, StoredEvent
from eventsourcing.sqlite import SQLiteCursor, SQLiteTransaction

from adapters.persistence.event_reads import SQLiteHistoryRecorder
from adapters.persistence.fence import Decide, insert_fenced_sqlite

ROWS_PER_STATEMENT = 500  # 4 parameters a row, well under SQLite's 32,766 per statement
_new = object.__new__
_set = object.__setattr__
_UNKNOWN = SafeUUID.unknown  # an Enum member: read once (each read of it runs Python code)


class BatchedSQLiteApplicationRecorder(SQLiteHistoryRecorder):
    def latest_version(self, originator_id: UUID) -> int | None:
        """The version of the originator's newest stored event, as last committed."""
        statement = f"SELECT MAX(originator_version) FROM {self.events_table_name} WHERE originator_id=?"
        with self.datastore.get_connection(commit=False) as connection:
            cursor = connection.cursor()
            cursor.execute(statement, (originator_id.hex,))
            version: int | None
            (version,) = cursor.fetchone()
        return version

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        """eventsourcing's ``select_notifications``: the same statement in the same read
        transaction, the same ``Notification`` objects, built cheaper (module docstring)."""
        if self.datastore.originator_id_type != "uuid":
            return super().select_notifications(start, limit, stop, topics, inclusive_of_start=inclusive_of_start)
        conditions: list[str] = []
        params: list[int | str] = []
        if start is not None:
            conditions.append("rowid>=?" if inclusive_of_start else "rowid>?")
            params.append(start)
        if stop is not None:
            conditions.append("rowid<=?")
            params.append(stop)
        if topics:
            conditions.append(f"topic IN ({','.join('?' * len(topics))})")
            params += topics
        where = f"WHERE {' AND '.join(conditions)} " if conditions else ""
        statement = f"SELECT rowid, originator_id, originator_version, topic, state FROM {self.events_table_name} "
        params.append(limit)
        with self.datastore.transaction(commit=False) as c:
            cursor = c.sqlite_cursor
            cursor.row_factory = None  # plain tuples (this cursor only: each transaction opens its own)
            cursor.execute(f"{statement}{where}ORDER BY rowid LIMIT ?", params)
            rows = cursor.fetchall()
        return [_notification(*row) for row in rows]

    def insert_fenced(self, originator_id: UUID, after_version: int, decide: Decide) -> Sequence[int]:
        """The originator's events after ``after_version`` handed to ``decide``, and the events it
        returns inserted, in one transaction no other insert can come into (fence.py)."""
        return insert_fenced_sqlite(self, originator_id, after_version, decide)

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        """One statement's batch in SQLite's own transaction of that statement; a longer one
        in eventsourcing's explicit transaction (BEGIN, its statements, COMMIT)."""
        if not 0 < len(stored_events) <= ROWS_PER_STATEMENT:
            return super().insert_events(stored_events, **kwargs)
        with self.datastore.get_connection(commit=True) as connection:
            cursor = connection.cursor()
            try:
                return self._insert_events(cursor, stored_events)
            except BaseException as exc:
                # rolled back by SQLite already; raised as eventsourcing's transaction raises it
                SQLiteTransaction(connection).__exit__(type(exc), exc, exc.__traceback__)
                raise
            finally:
                cursor.sqlite_cursor.close()

    def _insert_events(self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **_: Any) -> Sequence[int] | None:
        ids: list[int] = []
        for start in range(0, len(stored_events), ROWS_PER_STATEMENT):
            chunk = stored_events[start : start + ROWS_PER_STATEMENT]
            params: list[Any] = []
            for s in chunk:
                params += (
                    s.originator_id.hex if isinstance(s.originator_id, UUID) else s.originator_id,
                    s.originator_version,
                    s.topic,
                    s.state,
                )
            c.execute(f"INSERT INTO {self.events_table_name} VALUES {','.join(['(?,?,?,?)'] * len(chunk))}", params)
            last = c.sqlite_cursor.lastrowid
            assert last is not None  # an INSERT just ran on this cursor
            ids.extend(range(last - len(chunk) + 1, last + 1))
        return ids


def _notification(rowid: int, originator_id: str, version: int, topic: str, state: bytes) -> Notification:
    """``Notification(originator_id=UUID(originator_id), ...)`` without the dataclass's and
    the UUID's generic constructors: the same fields, in the declared order, in its ``__dict__``."""
    notification = _new(Notification)
    _set(
        notification,
        "__dict__",
        {
            "originator_id": _uuid(originator_id),
            "originator_version": version,
            "topic": topic,
            "state": state,
            "id": rowid,
        },
    )
    return notification


def _uuid(text: str) -> UUID:
    """``UUID(text)`` for the 32 hex digits eventsourcing stores (``int(text, 16)`` is what
    ``UUID`` computes from them and refuses what it refuses); any other form through ``UUID``."""
    number = int(text, 16) if len(text) == 32 else -1
    if number < 0:  # not 32 characters, or a sign int() reads and UUID refuses (out of range)
        return UUID(text)
    uuid = _new(UUID)
    _set(uuid, "int", number)
    _set(uuid, "is_safe", _UNKNOWN)
    return uuid
