"""The PostgreSQL half of event_reads.py (its docstring holds the invariants): plain rows read
straight from the events table, and the event-time index, on PostgreSQL.

Apart from event_reads.py because it needs psycopg at import, and SQLite mode (every CLI
command, an embedded serve) must not pay for importing it.
"""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Composed, Identifier, Literal

from adapters.persistence.event_reads import _HEAD, TIMED_TOPICS, Row, widened


class PostgresHistoryRecorder(PostgresApplicationRecorder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        schema = Identifier(self.datastore.schema)
        self._table = SQL("{schema}.{table}").format(schema=schema, table=Identifier(self.events_table_name))
        self._time = SQL("{schema}.tallyhub_event_time(state)").format(schema=schema)
        self._columns = SQL(
            "notification_id, translate(originator_id::text, '-', ''), originator_version, topic, state"
        )
        # Statements run in one transaction; the advisory lock keeps processes starting together apart.
        self.sql_create_statements += [
            SQL("SELECT pg_advisory_xact_lock(hashtext({key}))").format(
                key=Literal(f"tallyhub:{self.datastore.schema}.tallyhub_event_time")
            ),
            # IMMUTABLE is true of this use: the ISO text carries its UTC offset, so neither the
            # session's TimeZone nor its DateStyle changes the instant it parses to.
            SQL(
                "CREATE OR REPLACE FUNCTION {schema}.tallyhub_event_time(state bytea) RETURNS timestamptz "
                "LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$ "
                "DECLARE head text := encode(substring(state from 1 for 96), 'escape'); "
                "BEGIN "
                "IF starts_with(head, {head}) THEN "
                "RETURN split_part(substring(head from {after}), '\"', 1)::timestamptz; "
                "END IF; "
                "BEGIN "
                "RETURN (convert_from(state, 'UTF8')::json -> 'timestamp' ->> '_data_')::timestamptz; "
                "EXCEPTION WHEN others THEN RETURN NULL; "
                "END; "
                "END $$"
            ).format(schema=schema, head=Literal(_HEAD), after=Literal(len(_HEAD) + 1)),
            *(
                SQL("CREATE INDEX IF NOT EXISTS {index} ON {table} ({time}) WHERE topic = {topic}").format(
                    index=Identifier(self._index(topic)), table=self._table, time=self._time, topic=Literal(topic)
                )
                for topic in TIMED_TOPICS
            ),
        ]

    def select_rows(self, topics: Sequence[str], after: int, stop: int, limit: int) -> Sequence[Row]:
        statement = SQL(
            "SELECT {columns} FROM {table} WHERE notification_id > %s AND notification_id <= %s "
            "AND topic = ANY(%s) ORDER BY notification_id LIMIT %s"
        ).format(columns=self._columns, table=self._table)
        return self._fetch(statement, (after, stop, list(topics), limit))

    def select_rows_at(self, positions: Sequence[int]) -> Sequence[Row]:
        statement = SQL("SELECT {columns} FROM {table} WHERE notification_id = ANY(%s) ORDER BY notification_id")
        return self._fetch(statement.format(columns=self._columns, table=self._table), (list(positions),))

    def window_positions(
        self, topic: str, since: datetime | None, until: datetime | None, stop: int
    ) -> Sequence[int] | None:
        exists = SQL("SELECT 1 FROM pg_indexes WHERE schemaname = %s AND indexname = %s")
        if topic not in TIMED_TOPICS or not self._fetch(exists, (self.datastore.schema, self._index(topic))):
            return None
        conditions = [SQL("topic = {topic}").format(topic=Literal(topic)), SQL("notification_id <= %s")]
        params: list[Any] = [stop]
        low, high = widened(since, until)
        if low is not None:
            conditions.append(SQL("{time} >= %s").format(time=self._time))
            params.append(low)
        if high is not None:
            conditions.append(SQL("{time} < %s").format(time=self._time))
            params.append(high)
        if low is None and high is None:
            conditions.append(SQL("{time} IS NOT NULL").format(time=self._time))
        query = SQL("SELECT notification_id FROM {table} WHERE {conditions}").format(
            table=self._table, conditions=SQL(" AND ").join(conditions)
        )
        return [position for (position,) in self._fetch(query, params)]

    def _index(self, topic: str) -> str:
        return f"{self.events_table_name}_{TIMED_TOPICS[topic]}"

    def _fetch(self, statement: Composed | SQL, params: Sequence[Any]) -> list[Any]:
        # Binary results: a state comes as its bytes, not as hex text to decode.
        with (
            self.datastore.get_connection() as connection,
            connection.cursor(row_factory=tuple_row, binary=True) as cursor,
        ):
            cursor.execute(statement, params)
            return cursor.fetchall()
