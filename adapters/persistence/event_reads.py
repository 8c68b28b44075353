"""What the SQLite and PostgreSQL recorders add for replay and verify
(application/history_reads.py's ``HistoryStore``): plain rows read straight from the events
table, and an index by event time over the topics a window is read by. The PostgreSQL half is
in event_reads_postgres.py, which imports psycopg.

The index is an expression index on the events table itself, partial on its topic (a request
record's ``Completed`` event, an account's ``ChargeRefunded``): the event time is read from
the stored JSON state by the database, so it is written in the same transaction as the event
by every writer, new or old, and ``CREATE INDEX`` builds it for a history written before it
existed (``tallyhub init`` on an existing store, or any start with CREATE_TABLE=y; 0.7 s for
100,000 records on SQLite). A store without it is still read correctly, only whole. Its cost on
the write path, measured server-side per request record (docs/performance.md, issue 21):
about 5 µs on SQLite and 9 µs on PostgreSQL, where it is spent under the append's table lock.

Invariants kept here:
- nothing here writes events, and the events' table, rows and ids are eventsourcing's own;
- ``window_positions`` returns a superset of the positions whose event time is in
  ``[since, until)``: SQLite's ``julianday`` keeps milliseconds only, so the bounds are widened
  by ``MARGIN``, and the reader tests each row's own time exactly;
- an event time is parsed from its ISO text with its UTC offset, never compared as text.
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import get_topic

from domain.account import Account
from domain.request_record import RequestRecord

Row = tuple[int, str, int, str, bytes]
TIMED_TOPICS = {get_topic(RequestRecord.Completed): "record_time", get_topic(Account.ChargeRefunded): "refund_time"}
MARGIN = timedelta(seconds=1)


def widened(since: datetime | None, until: datetime | None) -> tuple[datetime | None, datetime | None]:
    """The window's ends as the index is asked for them: each widened by ``MARGIN``, and left
    open where that would pass the calendar's own end (a window from 0001-01-01 or to 9999)."""
    try:
        low = since - MARGIN if since is not None else None
    except OverflowError:
        low = None
    try:
        high = until + MARGIN if until is not None else None
    except OverflowError:
        high = None
    return low, high


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# eventsourcing writes an event's timestamp first: read from the state's head when it starts
# as expected, a few bytes instead of a parse of the whole JSON (measured per record: ~2 µs
# instead of ~6 on SQLite, ~2.5 instead of ~10 on PostgreSQL; the index is kept on every
# write), else parsed; a state that is not JSON has no time (NULL) rather than failing its write.
_HEAD = '{"timestamp":{"_type_":"datetime_iso","_data_":"'
_SQLITE_TIME_TEXT = f"CAST(substr(state, {len(_HEAD) + 1}, 40) AS TEXT)"
_SQLITE_TIME = (
    f"CASE WHEN substr(state, 1, {len(_HEAD)}) = CAST('{_HEAD}' AS BLOB) "
    f"THEN julianday(substr({_SQLITE_TIME_TEXT}, 1, instr({_SQLITE_TIME_TEXT}, '\"') - 1)) "
    "WHEN json_valid(CAST(state AS TEXT)) THEN julianday(json_extract(CAST(state AS TEXT), '$.timestamp._data_')) END"
)
_ROWS_PER_LOOKUP = 500  # positions per SELECT ... IN (...), well under SQLite's parameter limit


def _julian_day(at: datetime) -> float:
    return (at - _EPOCH).total_seconds() / 86400 + 2440587.5


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class SQLiteHistoryRecorder(SQLiteApplicationRecorder):
    def construct_create_table_statements(self) -> list[str]:
        return super().construct_create_table_statements() + [
            f"CREATE INDEX IF NOT EXISTS {self._index(topic)} ON {self.events_table_name} ({_SQLITE_TIME}) "
            f"WHERE topic = {_quoted(topic)}"
            for topic in TIMED_TOPICS
        ]

    def select_rows(self, topics: Sequence[str], after: int, stop: int, limit: int) -> Sequence[Row]:
        statement = (
            f"SELECT rowid, originator_id, originator_version, topic, state FROM {self.events_table_name} "
            f"WHERE rowid > ? AND rowid <= ? AND topic IN ({','.join('?' * len(topics))}) ORDER BY rowid LIMIT ?"
        )
        return self._fetch(statement, (after, stop, *topics, limit))

    def select_rows_at(self, positions: Sequence[int]) -> Sequence[Row]:
        found: list[Row] = []
        for start in range(0, len(positions), _ROWS_PER_LOOKUP):
            chunk = positions[start : start + _ROWS_PER_LOOKUP]
            statement = (
                f"SELECT rowid, originator_id, originator_version, topic, state FROM {self.events_table_name} "
                f"WHERE rowid IN ({','.join('?' * len(chunk))}) ORDER BY rowid"
            )
            found += self._fetch(statement, chunk)
        return found

    def window_positions(
        self, topic: str, since: datetime | None, until: datetime | None, stop: int
    ) -> Sequence[int] | None:
        if topic not in TIMED_TOPICS:
            return None
        found = self._fetch("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", (self._index(topic),))
        if not found or _SQLITE_TIME not in found[0][0]:
            return None  # no index (a store from before it), or one this code's queries cannot use
        statement = (
            f"SELECT rowid FROM {self.events_table_name} INDEXED BY {self._index(topic)} "
            f"WHERE topic = {_quoted(topic)} AND {_SQLITE_TIME} >= ? AND rowid <= ?"
        )
        low, high = widened(since, until)
        params: list[Any] = [_julian_day(low) if low is not None else 0.0, stop]
        if high is not None:
            statement += f" AND {_SQLITE_TIME} < ?"
            params.append(_julian_day(high))
        return [position for (position,) in self._fetch(statement, params)]

    def _index(self, topic: str) -> str:
        return f"{self.events_table_name}_{TIMED_TOPICS[topic]}"

    def _fetch(self, statement: str, params: Sequence[Any]) -> list[Any]:
        with self.datastore.get_connection(commit=False) as connection:
            cursor = connection.cursor().sqlite_cursor
            cursor.row_factory = None  # plain tuples: a sqlite3.Row per row costs more than its use
            cursor.execute(statement, params)
            return cursor.fetchall()
