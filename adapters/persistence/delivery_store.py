"""Webhook delivery rows (application/deliveries.py): ``webhook_deliveries``, in the same
database as the event store (SQLite in embedded mode, the deployment's schema on
PostgreSQL), or in memory for the in-memory event store.

Invariants kept here:
- ``(event_id, webhook_id)`` is UNIQUE: a notice published twice has one row per webhook;
- a claim is one statement that changes only rows still pending, due and unclaimed
  (PostgreSQL: ``FOR UPDATE SKIP LOCKED``; SQLite: its write lock), so two workers never
  claim the same row; an outcome is written only under the claim's token;
- the table is created by ``tallyhub init`` or by the first publish (a read of a store
  without it finds nothing and creates nothing); PostgreSQL creates it under a
  transaction-scoped advisory lock, so processes starting together never race on DDL;
- no secret is stored here: a webhook's secret is read from its subscription when signing.
"""

import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any
from weakref import WeakKeyDictionary

from adapters.persistence.side_tables import PostgresSideTable, SqliteSideTable, side_rows_for
from adapters.settings import Settings
from application.deliveries import (
    FAILED,
    PENDING,
    Delivery,
    DeliveryOutbox,
    DeliveryRows,
    NoSubscribers,
    Outcome,
    RetryPolicy,
)
from application.ledger import Ledger
from application.webhooks import LedgerSubscribers

# psycopg is imported by the PostgreSQL rows' methods only, so that SQLite mode (every CLI
# command, an embedded serve) never pays for importing it (issue 21).
TABLE = "webhook_deliveries"
COLUMNS = (
    "delivery_id, event_id, webhook_id, notice_type, url, body, status, attempts, created_at, "
    "next_attempt_at, last_status, last_error, last_attempt_at"
)
_FIELDS = [name.strip() for name in COLUMNS.split(",")]
_IN_MEMORY: "WeakKeyDictionary[Any, DeliveryRows]" = WeakKeyDictionary()


def build_delivery_outbox(ledger: Ledger | None) -> DeliveryOutbox:
    """The outbox beside ``ledger``'s events, to the webhooks subscribed in it (server mode's
    worker sets ``queued`` to wake its dramatiq actors)."""
    if ledger is None:
        return DeliveryOutbox(InMemoryDeliveryRows(), NoSubscribers(), time.time)
    return DeliveryOutbox(delivery_rows_for(ledger.recorder), LedgerSubscribers(ledger), time.time)


def retry_policy(settings: Settings) -> RetryPolicy:
    """TALLYHUB_WEBHOOK_TIMEOUT_SECONDS, _MAX_ATTEMPTS and _RETRY_SECONDS; a claim outlives an attempt."""
    timeout = float(settings.webhook_timeout_seconds)
    return RetryPolicy(
        first_delay_seconds=float(settings.webhook_retry_seconds),
        max_attempts=settings.webhook_max_attempts,
        timeout_seconds=timeout,
        lease_seconds=max(60.0, 2 * timeout + 30.0),
    )


def delivery_rows_for(recorder: Any) -> DeliveryRows:
    """The rows beside ``recorder``'s events: same database, same connections."""
    return side_rows_for(recorder, SqliteDeliveryRows, PostgresDeliveryRows, InMemoryDeliveryRows, _IN_MEMORY)


def _values(delivery: Delivery) -> tuple[Any, ...]:
    return tuple(getattr(delivery, name) for name in _FIELDS)


def _delivery(found: Sequence[Any]) -> Delivery:
    values = dict(zip(_FIELDS, found, strict=True))
    for name in ("created_at", "next_attempt_at", "last_attempt_at"):
        if values[name] is not None:
            values[name] = float(values[name])
    return Delivery(**values)


def _outcome_values(outcome: Outcome) -> tuple[Any, ...]:
    return (
        outcome.status,
        outcome.attempts,
        outcome.next_attempt_at,
        outcome.last_status,
        outcome.last_error,
        outcome.last_attempt_at,
    )


_SET_OUTCOME = (
    "status = {p}, attempts = {p}, next_attempt_at = {p}, last_status = {p}, last_error = {p}, "
    "last_attempt_at = {p}, claim_token = NULL, claimed_until = 0"
)


class InMemoryDeliveryRows:
    """For the in-memory event store: rows in a dict, gone with the process (as its events are)."""

    def __init__(self) -> None:
        self._rows: dict[str, Delivery] = {}
        self._claims: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def create_table(self) -> None:
        pass

    def add(self, deliveries: Sequence[Delivery]) -> int:
        with self._lock:
            keys = {(row.event_id, row.webhook_id) for row in self._rows.values()}
            added = 0
            for delivery in deliveries:
                if (delivery.event_id, delivery.webhook_id) not in keys:
                    self._rows[delivery.delivery_id] = delivery
                    keys.add((delivery.event_id, delivery.webhook_id))
                    added += 1
            return added

    def _claimable(self, row: Delivery, now: float) -> bool:
        claimed_until = self._claims.get(row.delivery_id, ("", 0.0))[1]
        return row.status == PENDING and (row.next_attempt_at or 0.0) <= now and claimed_until <= now

    def claim(
        self, *, now: float, token: str, lease_until: float, limit: int, delivery_id: str | None = None
    ) -> list[Delivery]:
        with self._lock:
            rows = [self._rows[delivery_id]] if delivery_id in self._rows else []
            if delivery_id is None:
                rows = sorted(self._rows.values(), key=lambda row: row.next_attempt_at or 0.0)
            taken = [row for row in rows if self._claimable(row, now)][:limit]
            for row in taken:
                self._claims[row.delivery_id] = (token, lease_until)
            return taken

    def record(self, delivery_id: str, token: str, outcome: Outcome) -> bool:
        with self._lock:
            if self._claims.get(delivery_id, ("", 0.0))[0] != token:
                return False
            del self._claims[delivery_id]
            self._rows[delivery_id] = replace(
                self._rows[delivery_id],
                status=outcome.status,
                attempts=outcome.attempts,
                next_attempt_at=outcome.next_attempt_at,
                last_status=outcome.last_status,
                last_error=outcome.last_error,
                last_attempt_at=outcome.last_attempt_at,
            )
            return True

    def due(self, *, now: float, limit: int) -> list[str]:
        rows = sorted(self._rows.values(), key=lambda row: row.next_attempt_at or 0.0)
        return [row.delivery_id for row in rows if self._claimable(row, now)][:limit]

    def list(self, *, failed: bool = False, limit: int = 100) -> list[Delivery]:
        rows = [row for row in self._rows.values() if not failed or row.status == FAILED]
        return sorted(rows, key=lambda row: (row.created_at, row.delivery_id), reverse=True)[:limit]

    def counts(self) -> dict[str, int]:
        return dict(Counter(row.status for row in self._rows.values()))


class SqliteDeliveryRows(SqliteSideTable):
    name = TABLE
    definition = (
        "delivery_id TEXT PRIMARY KEY, event_id TEXT NOT NULL, "
        "webhook_id TEXT NOT NULL, notice_type TEXT NOT NULL, url TEXT NOT NULL, body TEXT NOT NULL, "
        "status TEXT NOT NULL, attempts INTEGER NOT NULL, created_at REAL NOT NULL, "
        "next_attempt_at REAL, last_status INTEGER, last_error TEXT, last_attempt_at REAL, "
        "claim_token TEXT, claimed_until REAL NOT NULL DEFAULT 0, UNIQUE (event_id, webhook_id)"
    )
    indexes = (("due", "status, next_attempt_at"),)

    def add(self, deliveries: Sequence[Delivery]) -> int:
        self._ensure()
        marks = ", ".join("?" for _ in _FIELDS)
        added = 0
        with self.datastore.transaction(commit=True) as c:
            for delivery in deliveries:
                c.execute(f"INSERT OR IGNORE INTO {TABLE} ({COLUMNS}) VALUES ({marks})", _values(delivery))
                c.execute("SELECT changes()")
                added += int(c.fetchone()[0])
        return added

    def claim(
        self, *, now: float, token: str, lease_until: float, limit: int, delivery_id: str | None = None
    ) -> list[Delivery]:
        if not self._exists():
            return []
        only = "AND delivery_id = ?" if delivery_id is not None else ""
        parameters: tuple[Any, ...] = (token, lease_until, now, now)
        parameters += (delivery_id,) if delivery_id is not None else ()
        with self.datastore.transaction(commit=True) as c:
            c.execute(
                f"UPDATE {TABLE} SET claim_token = ?, claimed_until = ? WHERE delivery_id IN ("
                f"SELECT delivery_id FROM {TABLE} WHERE status = 'pending' AND next_attempt_at <= ? "
                f"AND claimed_until <= ? {only} ORDER BY next_attempt_at LIMIT ?) RETURNING {COLUMNS}",
                (*parameters, limit),
            )
            return [_delivery(tuple(found)) for found in c.fetchall()]

    def record(self, delivery_id: str, token: str, outcome: Outcome) -> bool:
        self._ensure()
        with self.datastore.transaction(commit=True) as c:
            c.execute(
                f"UPDATE {TABLE} SET {_SET_OUTCOME.format(p='?')} WHERE delivery_id = ? AND claim_token = ?",
                (*_outcome_values(outcome), delivery_id, token),
            )
            c.execute("SELECT changes()")
            return bool(c.fetchone()[0])

    def due(self, *, now: float, limit: int) -> list[str]:
        if not self._exists():
            return []
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT delivery_id FROM {TABLE} WHERE status = 'pending' AND next_attempt_at <= ? "
                "AND claimed_until <= ? ORDER BY next_attempt_at LIMIT ?",
                (now, now, limit),
            )
            return [str(found[0]) for found in c.fetchall()]

    def list(self, *, failed: bool = False, limit: int = 100) -> list[Delivery]:
        if not self._exists():
            return []
        where = "WHERE status = 'failed'" if failed else ""
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT {COLUMNS} FROM {TABLE} {where} ORDER BY created_at DESC, delivery_id DESC LIMIT ?", (limit,)
            )
            return [_delivery(tuple(found)) for found in c.fetchall()]

    def counts(self) -> dict[str, int]:
        if not self._exists():
            return {}
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT status, count(*) FROM {TABLE} GROUP BY status")
            return {str(status): int(count) for status, count in c.fetchall()}


class PostgresDeliveryRows(PostgresSideTable):
    name = TABLE
    definition = (
        "delivery_id text PRIMARY KEY, event_id text NOT NULL, "
        "webhook_id text NOT NULL, notice_type text NOT NULL, url text NOT NULL, body text NOT NULL, "
        "status text NOT NULL, attempts integer NOT NULL, created_at double precision NOT NULL, "
        "next_attempt_at double precision, last_status integer, last_error text, "
        "last_attempt_at double precision, claim_token text, "
        "claimed_until double precision NOT NULL DEFAULT 0, UNIQUE (event_id, webhook_id)"
    )
    indexes = (("due", "status, next_attempt_at"),)

    def add(self, deliveries: Sequence[Delivery]) -> int:
        from psycopg.sql import SQL

        self._ensure()
        marks = SQL(", ".join("%s" for _ in _FIELDS))
        added = 0
        with self.datastore.transaction(commit=True) as c:
            for delivery in deliveries:
                c.execute(
                    SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING").format(
                        self.table, SQL(COLUMNS), marks
                    ),
                    _values(delivery),
                )
                added += c.rowcount
        return added

    def claim(
        self, *, now: float, token: str, lease_until: float, limit: int, delivery_id: str | None = None
    ) -> list[Delivery]:
        from psycopg.sql import SQL

        if not self._exists():
            return []
        only = SQL("AND delivery_id = %s") if delivery_id is not None else SQL("")
        parameters: tuple[Any, ...] = (token, lease_until, now, now)
        parameters += (delivery_id,) if delivery_id is not None else ()
        with self.datastore.transaction(commit=True) as c:
            c.execute(
                SQL(
                    "UPDATE {} SET claim_token = %s, claimed_until = %s WHERE delivery_id IN ("
                    "SELECT delivery_id FROM {} WHERE status = 'pending' AND next_attempt_at <= %s "
                    "AND claimed_until <= %s {} ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED) "
                    "RETURNING {}"
                ).format(self.table, self.table, only, SQL(COLUMNS)),
                (*parameters, limit),
            )
            return [_delivery([found[name] for name in _FIELDS]) for found in c.fetchall()]

    def record(self, delivery_id: str, token: str, outcome: Outcome) -> bool:
        from psycopg.sql import SQL

        self._ensure()
        with self.datastore.transaction(commit=True) as c:
            c.execute(
                SQL(
                    f"UPDATE {{}} SET {_SET_OUTCOME.format(p='%s')} WHERE delivery_id = %s AND claim_token = %s"
                ).format(self.table),
                (*_outcome_values(outcome), delivery_id, token),
            )
            return c.rowcount == 1

    def due(self, *, now: float, limit: int) -> list[str]:
        from psycopg.sql import SQL

        if not self._exists():
            return []
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                SQL(
                    "SELECT delivery_id FROM {} WHERE status = 'pending' AND next_attempt_at <= %s "
                    "AND claimed_until <= %s ORDER BY next_attempt_at LIMIT %s"
                ).format(self.table),
                (now, now, limit),
            )
            return [str(found["delivery_id"]) for found in c.fetchall()]

    def list(self, *, failed: bool = False, limit: int = 100) -> list[Delivery]:
        from psycopg.sql import SQL

        if not self._exists():
            return []
        where = SQL("WHERE status = 'failed'") if failed else SQL("")
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                SQL("SELECT {} FROM {} {} ORDER BY created_at DESC, delivery_id DESC LIMIT %s").format(
                    SQL(COLUMNS), self.table, where
                ),
                (limit,),
            )
            return [_delivery([found[name] for name in _FIELDS]) for found in c.fetchall()]

    def counts(self) -> dict[str, int]:
        from psycopg.sql import SQL

        if not self._exists():
            return {}
        with self.datastore.transaction(commit=False) as c:
            c.execute(SQL("SELECT status, count(*) AS n FROM {} GROUP BY status").format(self.table))
            return {str(found["status"]): int(found["n"]) for found in c.fetchall()}


__all__ = [
    "InMemoryDeliveryRows",
    "PostgresDeliveryRows",
    "SqliteDeliveryRows",
    "build_delivery_outbox",
    "delivery_rows_for",
    "retry_policy",
]
