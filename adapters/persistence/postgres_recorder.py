"""The PostgreSQL event store's application recorder, sending a batch as four plain arrays.

eventsourcing inserts a batch as one array of a composite type (originator id, version,
topic, state), which psycopg can only send as text: each event's state is escaped byte by
byte in Python. Measured on this project's hot-account run, that dumping was a fifth of the
process's samples; sent as four arrays in binary (ids, versions, topics, states) the same
100-event insert costs the client 0.19 ms of CPU instead of 1.5 ms
(tests/integration/test_postgres_recorder.py keeps the stored rows identical). The
statement, the table lock that orders notification ids, the NOTIFY and the ids returned
are eventsourcing's own: only the parameters' shape differs.

A batch is also sent in one round trip and one write: BEGIN, the lock, the NOTIFY, the
insert and COMMIT go out together with one Sync (adapters/persistence/one_write.py).
eventsourcing's ``insert_events`` nests psycopg's ``transaction()`` in a ``pipeline()``, which
syncs on entering and leaving each level: five round trips per batch, and the group-commit
writer thread waited for each one, and then for the interpreter lock behind the event loop;
psycopg's pipeline, synced once, still wrote each statement to the socket on its own (eight
``sendto`` a batch). Nothing changes for the store: the same statements run in the same
transaction, in the same order; a statement that fails (a version already taken:
``IntegrityError``) makes the server skip the rest up to the Sync, COMMIT included, and the
transaction is rolled back before the connection goes back to the pool. The statements are
prepared on each connection (in the write of their first batch there), and the arrays are
built with fixed element types (adapters/persistence/binary_arrays.py) to match.

``latest_version`` serves the group-commit writer's freshness check (one per account per
batch) with one SELECT of a single integer, where ``select_events`` returns the whole
newest event.

``insert_fenced`` is the ledger's last try of a change that lost every optimistic save to
other writers: read, decide and insert under the table lock (adapters/persistence/fence.py).

PostgreSQL unreachable is answered 503 ``store_unavailable`` (adapters/http/errors.py)
promptly, and the store is used again as soon as it answers (docs/reliability.md, finding 2).
eventsourcing retries each call ten times, each attempt waiting the pool's whole timeout for
a connection, and the hot path's reads run on the event loop, so an outage was answered after
minutes, one request behind another. Here:

- a call retries a lost or refused connection as eventsourcing does, but only while the store
  timeout lasts (``TALLYHUB_STORE_TIMEOUT_SECONDS``, which is also the pool's wait for a
  connection, ``POSTGRES_CONNECT_TIMEOUT``); one connection attempt is bounded by libpq's
  ``connect_timeout``;
- a call that failed for its connection (lost, refused, none from the pool in time) has the
  ``StoreBreaker`` try a connection of its own, outside the pool: if the server takes it, the
  pool was only busy or the connection stale, and nothing changes; if not, the breaker opens
  (the call stops retrying), and until a probe thread gets a connection through the
  pool again every call fails at once with ``OperationalError`` (503), so no request, and not
  the event loop, waits for a store known to be away. The probe tries every
  ``PROBE_INTERVAL_SECONDS`` (each try waits at most the store timeout), so requests are
  served again within a few seconds of the server's return;
- the pool tries a lost server again with its doubling back-off for at most
  ``RECONNECT_SECONDS``; later attempts start from the probe's or a request's demand.
"""

import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from uuid import UUID

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError, ProgrammingError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg.abc import Query
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composable, Identifier

from adapters.persistence.binary_arrays import (
    BYTEA_ARRAY_OID,
    INT4_ARRAY_OID,
    TEXT_ARRAY_OID,
    UUID_ARRAY_OID,
    bytea_array,
    int4_array,
    text_array,
    uuid_array,
)
from adapters.persistence.event_reads_postgres import PostgresHistoryRecorder
from adapters.persistence.fence import Decide, insert_fenced_postgres
from adapters.persistence.one_write import Statement, run_transaction

RETRY_WAIT_SECONDS = 0.2  # eventsourcing's wait between attempts
RECONNECT_SECONDS = 10.0  # the pool's back-off on a lost server stops here
PROBE_INTERVAL_SECONDS = 0.5  # the breaker's probe: between two tries for a connection
Result = TypeVar("Result")
log = logging.getLogger("tallyhub.store")


class StoreBreaker:
    """Open while the store is known unreachable: calls fail at once instead of each waiting
    for a connection. A call that got none (``trip``) has a thread check whether the server
    takes a new connection at all (``connects``): if it does, the pool was only busy and the
    breaker stays closed; if not, it opens until ``probe`` (a query through the pool) works."""

    def __init__(self, probe: Callable[[], None], connects: Callable[[], bool], closed: Callable[[], bool]) -> None:
        self._probe = probe
        self._connects = connects
        self._closed = closed  # the pool is closed: stop probing
        self._lock = threading.Lock()
        self._checking = False
        self._opened_at: float | None = None

    @property
    def open(self) -> bool:
        return self._opened_at is not None

    def check(self) -> None:
        """Raises OperationalError while open."""
        opened_at = self._opened_at
        if opened_at is not None:
            away = time.monotonic() - opened_at
            raise OperationalError(f"the store is unreachable (no connection for {away:.0f} s); not waiting")

    def trip(self, error: BaseException) -> None:
        """A call failed for its connection: is the server away?"""
        with self._lock:
            if self._checking or self._closed():
                return
            self._checking = True
        threading.Thread(target=self._check_server, args=(error,), name="tallyhub-store-probe", daemon=True).start()

    def _check_server(self, error: BaseException) -> None:
        try:
            if self._connects():
                return  # the server takes connections: the pool was busy, not the store away
            with self._lock:
                self._opened_at = time.monotonic()
            log.warning("the store is unreachable (%s): answering 503 at once until it answers again", error)
            self._until_reachable()
        finally:
            with self._lock:
                self._checking = False

    def _until_reachable(self) -> None:
        while not self._closed():
            try:
                self._probe()
            except (InterfaceError, OperationalError):
                time.sleep(PROBE_INTERVAL_SECONDS)
                continue
            with self._lock:
                opened_at, self._opened_at = self._opened_at, None
            if opened_at is not None:
                log.warning("the store answers again after %.1f s", time.monotonic() - opened_at)
            return


def _within_budget(method: Callable[..., Result]) -> Callable[..., Result]:
    """``method`` without eventsourcing's ten attempts (its ``__wrapped__``), retried on a lost or
    refused connection only while the recorder's store timeout lasts."""
    once: Callable[..., Result] = getattr(method, "__wrapped__", method)

    @functools.wraps(once)
    def call(self: "BatchedPostgresApplicationRecorder", *args: Any, **kwargs: Any) -> Result:
        self.breaker.check()
        give_up_at = time.monotonic() + self.store_timeout
        while True:
            try:
                return once(self, *args, **kwargs)
            except (InterfaceError, OperationalError) as error:
                self.breaker.trip(error)  # is the server away? (checked on a thread; opens only if so)
                time.sleep(RETRY_WAIT_SECONDS)
                if time.monotonic() >= give_up_at or self.breaker.open:
                    raise

    return call


def _as_uuid(originator_id: UUID | str) -> UUID:
    return originator_id if isinstance(originator_id, UUID) else UUID(originator_id)


def _rendered(query: Query) -> bytes:
    if isinstance(query, bytes):
        return query
    if isinstance(query, str):
        return query.encode()
    if isinstance(query, Composable):
        return query.as_bytes(None)
    raise TypeError(f"a statement of eventsourcing's that cannot be rendered once: {query!r}")


class BatchedPostgresApplicationRecorder(PostgresHistoryRecorder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        pool = self.datastore.pool
        self.store_timeout = float(pool.timeout)  # POSTGRES_CONNECT_TIMEOUT (adapters/settings.py)
        pool.reconnect_timeout = max(RECONNECT_SECONDS, self.store_timeout)
        if isinstance(pool.kwargs, dict):  # libpq's bound on one connection attempt (whole seconds, at least 2)
            pool.kwargs.setdefault("connect_timeout", max(2, math.ceil(self.store_timeout)))
        self.breaker = StoreBreaker(self._probe, self._connects, lambda: pool.closed)
        table = dict(schema=Identifier(self.datastore.schema), table=Identifier(self.events_table_name))
        self._uuid_ids = self.datastore.originator_id_type == "uuid"
        id_array_oid = UUID_ARRAY_OID if self._uuid_ids else TEXT_ARRAY_OID
        self._insert = Statement(  # the parameters' types are given when it is prepared (binary_arrays.py)
            SQL(
                "INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state)"
                " SELECT * FROM unnest($1::{id_type}[], $2::integer[], $3::text[], $4::bytea[])"
                " RETURNING notification_id"
            )
            .format(id_type=SQL(self.datastore.originator_id_type), **table)
            .as_bytes(None),
            param_types=(id_array_oid, INT4_ARRAY_OID, TEXT_ARRAY_OID, BYTEA_ARRAY_OID),
        )
        # eventsourcing's lock and NOTIFY statements, rendered once instead of on each batch
        no_params: tuple[bytes, ...] = ()
        self._lock_calls = [(Statement(_rendered(statement)), no_params) for statement in self.lock_table_statements]
        self._notify_call = (
            Statement(SQL("NOTIFY {0}").format(Identifier(self.channel_name)).as_bytes(None)),
            no_params,
        )
        self._latest_version_statement = SQL(
            "SELECT MAX(originator_version) AS version FROM {schema}.{table} WHERE originator_id = %s"
        ).format(**table)

    @_within_budget
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        """eventsourcing's insert (same statements, one transaction), sent in one write with one
        Sync: returns the new rows' notification ids in the order of ``stored_events``."""
        if not stored_events:
            return []
        with self.datastore.get_connection() as conn:
            try:
                return self._insert_in_one_round_trip(conn, stored_events)
            finally:
                if conn.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
                    conn.rollback()  # failed (or lost) before COMMIT: nothing of the batch stays

    def _insert_in_one_round_trip(
        self, conn: psycopg.Connection[DictRow], stored_events: Sequence[StoredEvent]
    ) -> list[int]:
        *_, inserted = run_transaction(
            conn, [*self._lock_calls, self._notify_call, (self._insert, self._arrays(stored_events))]
        )
        if inserted.ntuples != len(stored_events):
            raise ProgrammingError(
                f"the store returned {inserted.ntuples} notification ids for {len(stored_events)} events"
            )
        return [int(inserted.get_value(row, 0) or b"") for row in range(inserted.ntuples)]

    def _arrays(self, stored_events: Sequence[StoredEvent]) -> list[bytes]:
        """The insert's four parameters: ids, versions, topics and states, each one binary array."""
        ids = [event.originator_id for event in stored_events]
        return [
            uuid_array([_as_uuid(id_) for id_ in ids]) if self._uuid_ids else text_array([str(id_) for id_ in ids]),
            int4_array([event.originator_version for event in stored_events]),
            text_array([event.topic for event in stored_events]),
            bytea_array([event.state for event in stored_events]),
        ]

    select_events = _within_budget(PostgresApplicationRecorder.select_events)
    select_notifications = _within_budget(PostgresApplicationRecorder.select_notifications)
    max_notification_id = _within_budget(PostgresApplicationRecorder.max_notification_id)

    @_within_budget
    def latest_version(self, originator_id: UUID) -> int | None:
        """The version of the originator's newest stored event, as last committed."""
        with self.datastore.get_connection() as connection, connection.cursor() as cursor:
            cursor.execute(self._latest_version_statement, (originator_id,), prepare=True)
            row = cursor.fetchone()
        return row["version"] if row else None

    def insert_fenced(self, originator_id: UUID, after_version: int, decide: Decide) -> Sequence[int]:
        """The originator's events after ``after_version`` handed to ``decide``, and the events it
        returns inserted, in one transaction no other insert can come into (fence.py). Not
        retried (``decide`` has changed its aggregate by then); fails at once while the store is away."""
        self.breaker.check()
        return insert_fenced_postgres(self, originator_id, after_version, decide)

    def _probe(self) -> None:
        with self.datastore.get_connection() as connection:
            connection.execute("SELECT 1")

    def _connects(self) -> bool:
        """Whether the server takes a new connection now (outside the pool, which may be busy)."""
        pool = self.datastore.pool
        conninfo = pool.conninfo if isinstance(pool.conninfo, str) else pool.conninfo()
        kwargs = pool.kwargs if isinstance(pool.kwargs, dict) else {}  # eventsourcing's pool: a dict
        try:
            with psycopg.Connection.connect(conninfo, **kwargs):
                return True
        except psycopg.Error:
            return False
