"""The ledger's entries: one row per movement of an account's balance, with the
event's notification position and the account's running balance after it.

Invariants kept here:
- one row per ``CreditGranted`` (kind ``grant``), ``Adjusted`` (``adjustment``),
  ``ChargeRefunded`` (``refund``), ``HoldSettled`` (``charge``) and ``GrantExpired``
  (``expiry``, negative; 0 when the grant was spent before its deadline) event, keyed by the
  event's notification ``position``; ``amount`` is signed (a charge is negative, a
  debit adjustment too), ``uncollected`` is what a charge or a debit could not take;
- per account, in position order, ``balance = previous balance + amount`` starting
  from 0, so the last row's balance equals ``Account.balance`` and the balances view;
- holds are reservations, not movements: placing or releasing one moves no balance
  and makes no row; a charge row names the hold it settled (``held``, 0 when it had
  already expired);
- a window ``[since, until)`` cuts each account's rows in position order at the first
  row whose time is at or after the bound, so ``opening_balance(since) + sum(amounts of
  list_entries(since, until)) == closing_balance(until)`` exactly, even if clocks
  disagree about the order of two events;
- rows are written once and never updated, so a rebuild from zero gives identical rows.

The runner hands this projection each event with its notification id (it is a
``PositionedProjection``, see runner.py), so it never reads the event store itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.utils import get_topic

from domain.account import Account
from domain.slots_init import slots_init
from projections.memory import InMemoryStore, MemoryTransaction
from projections.store import SqlStore, SqlTransaction

ENTRIES_TABLE = "th_rm_ledger_entries"
KINDS = ("grant", "adjustment", "refund", "charge", "expiry")
_NO_BOUND = 2**63 - 1  # above every position: "no row at or after the bound"


@slots_init  # one built per movement of credit: domain/slots_init.py
@dataclass(frozen=True, slots=True)
class LedgerEntry:
    position: int
    account_id: UUID
    at: datetime
    kind: str
    amount: int
    balance: int
    request_id: UUID | None = None
    reason: str | None = None
    idempotency_key: str | None = None
    uncollected: int = 0
    held: int = 0


COLUMNS = tuple(f.name for f in fields(LedgerEntry))


def entry_of(event: DomainEventProtocol[Any], position: int) -> LedgerEntry:
    """The movement ``event`` makes, with ``balance`` still 0 (the view computes it)."""
    make = _ENTRY_OF.get(type(event))
    if make is None:  # a subclass of a movement's class is that movement
        make = next((build for cls, build in _ENTRY_OF.items() if isinstance(event, cls)), None)
    if make is None:
        raise TypeError(f"not a movement of credit: {type(event).__qualname__}")
    return make(event, position)


# One builder per movement class, positional (``LedgerEntry``'s field order): each is
# ``entry_of`` for its class, found by the event's exact class (the topics are these classes).
def _grant(e: Any, position: int) -> LedgerEntry:
    return LedgerEntry(position, e.originator_id, e.timestamp, "grant", e.amount, 0, None, e.reason, e.idempotency_key)


def _adjustment(e: Any, position: int) -> LedgerEntry:
    at, amount = e.timestamp, e.amount
    return LedgerEntry(
        position, e.originator_id, at, "adjustment", amount, 0, None, e.reason, e.idempotency_key, amount - e.requested
    )


def _refund(e: Any, position: int) -> LedgerEntry:
    return LedgerEntry(position, e.originator_id, e.timestamp, "refund", e.amount, 0, e.request_id, e.reason)


def _charge(e: Any, position: int) -> LedgerEntry:
    return LedgerEntry(
        position, e.originator_id, e.timestamp, "charge", -e.amount, 0, e.request_id, None, None, e.uncollected, e.held
    )


def _expiry(e: Any, position: int) -> LedgerEntry:
    reason = f"grant {e.grant} expired"
    return LedgerEntry(position, e.originator_id, e.timestamp, "expiry", -e.amount, 0, e.request_id, reason)


_ENTRY_OF: dict[type[Any], Callable[[Any, int], LedgerEntry]] = {
    Account.CreditGranted: _grant,
    Account.Adjusted: _adjustment,
    Account.ChargeRefunded: _refund,
    Account.HoldSettled: _charge,
    Account.GrantExpired: _expiry,
}


class LedgerEntriesView(Protocol):
    def list_entries(
        self, account_id: UUID, since: datetime | None = None, until: datetime | None = None, limit: int | None = None
    ) -> list[LedgerEntry]:
        """The account's rows in the window ``[since, until)``, in position order."""

    def opening_balance(self, account_id: UUID, since: datetime | None) -> int:
        """The running balance just before the window that starts at ``since`` (None: 0)."""

    def closing_balance(self, account_id: UUID, until: datetime | None = None) -> int:
        """The running balance at the end of the window that ends at ``until`` (None: now)."""

    def window_positions(self, since: datetime | None, until: datetime | None) -> tuple[int, int]:
        """``[start, stop)`` positions of the window over *all* accounts: each bound is the
        first row (in position order) at or after its time; no bound: 0 / past the last row."""

    def iter_entries(self, start: int, stop: int, batch: int = 10_000) -> Iterator[LedgerEntry]:
        """Every row with ``start <= position < stop``, in position order, read in batches."""

    def iter_plain_entries(self, start: int, stop: int, batch: int = 10_000) -> Iterator[tuple[Any, ...]]:
        """``iter_entries`` as plain tuples in ``COLUMNS`` order, for exports: times as UTC
        ISO 8601 with microseconds, ids as hex, money as integers (see ``plain_entry``)."""

    def list_closing_balances(self) -> dict[UUID, tuple[int, int]]:
        """Per account: (the latest row's running balance, the number of rows)."""

    def apply(self, tx: Any, entries: list[LedgerEntry]) -> None: ...

    def clear(self, tx: Any) -> None: ...


class LedgerEntriesProjection:
    name = "ledger_entries"
    schema_version = 1  # raise it when its tables or rows change: projections/store.py Schema
    topics = frozenset(
        get_topic(cls)
        for cls in (
            Account.CreditGranted,
            Account.Adjusted,
            Account.ChargeRefunded,
            Account.HoldSettled,
            Account.GrantExpired,
        )
    )

    def __init__(self, view: LedgerEntriesView) -> None:
        self.view = view

    def process_at(self, tx: Any, events: list[DomainEventProtocol[Any]], positions: list[int]) -> None:
        self.view.apply(tx, [entry_of(event, position) for event, position in zip(events, positions, strict=True)])

    def clear(self, tx: Any) -> None:
        self.view.clear(tx)


def _position(entry: LedgerEntry) -> int:
    return entry.position


def plain_entry(entry: LedgerEntry) -> tuple[Any, ...]:
    """One row as ``iter_plain_entries`` gives it (the SQL view reads the same text back)."""
    return (
        entry.position,
        entry.account_id.hex,
        plain_time(entry.at),
        entry.kind,
        entry.amount,
        entry.balance,
        entry.request_id.hex if entry.request_id else None,
        entry.reason,
        entry.idempotency_key,
        entry.uncollected,
        entry.held,
    )


def plain_time(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def _boundary(entries: list[LedgerEntry], at: datetime | None) -> int:
    """Index of the first entry (position order) at or after ``at``; len when none."""
    if at is None:
        return len(entries)
    return next((i for i, entry in enumerate(entries) if entry.at >= at), len(entries))


class InMemoryLedgerEntriesView:
    def __init__(self, store: InMemoryStore) -> None:
        self._lock = store.lock
        self._entries: dict[UUID, list[LedgerEntry]] = {}

    def list_entries(
        self, account_id: UUID, since: datetime | None = None, until: datetime | None = None, limit: int | None = None
    ) -> list[LedgerEntry]:
        with self._lock:
            entries = list(self._entries.get(account_id, ()))
        start = 0 if since is None else _boundary(entries, since)
        window = entries[start : max(start, _boundary(entries, until))]
        return window if limit is None else window[:limit]

    def opening_balance(self, account_id: UUID, since: datetime | None) -> int:
        return 0 if since is None else self._balance_before(account_id, since)

    def closing_balance(self, account_id: UUID, until: datetime | None = None) -> int:
        return self._balance_before(account_id, until)

    def window_positions(self, since: datetime | None, until: datetime | None) -> tuple[int, int]:
        rows = self._all()
        start = 0 if since is None else min((e.position for e in rows if e.at >= since), default=_NO_BOUND)
        stop = _NO_BOUND if until is None else min((e.position for e in rows if e.at >= until), default=_NO_BOUND)
        return start, stop

    def iter_entries(self, start: int, stop: int, batch: int = 10_000) -> Iterator[LedgerEntry]:
        return iter([e for e in self._all() if start <= e.position < stop])

    def iter_plain_entries(self, start: int, stop: int, batch: int = 10_000) -> Iterator[tuple[Any, ...]]:
        return (plain_entry(entry) for entry in self.iter_entries(start, stop, batch))

    def list_closing_balances(self) -> dict[UUID, tuple[int, int]]:
        with self._lock:
            return {account: (rows[-1].balance, len(rows)) for account, rows in self._entries.items() if rows}

    def _all(self) -> list[LedgerEntry]:
        with self._lock:
            return sorted((e for rows in self._entries.values() for e in rows), key=lambda e: e.position)

    def apply(self, tx: MemoryTransaction, entries: list[LedgerEntry]) -> None:
        tx.on_commit(lambda: self._append(entries))

    def clear(self, tx: MemoryTransaction) -> None:
        tx.on_commit(self._entries.clear)

    def _balance_before(self, account_id: UUID, at: datetime | None) -> int:
        with self._lock:
            entries = list(self._entries.get(account_id, ()))
        end = _boundary(entries, at)
        return entries[end - 1].balance if end else 0

    def _append(self, entries: list[LedgerEntry]) -> None:
        for entry in sorted(entries, key=lambda e: e.position):
            rows = self._entries.setdefault(entry.account_id, [])
            rows.append(replace(entry, balance=(rows[-1].balance if rows else 0) + entry.amount))


class SqlLedgerEntriesView:
    DDL = (
        f"CREATE TABLE IF NOT EXISTS {ENTRIES_TABLE} ("
        " position BIGINT PRIMARY KEY, account_id TEXT NOT NULL, at TIMESTAMPTZ NOT NULL, kind TEXT NOT NULL,"
        " amount BIGINT NOT NULL, balance BIGINT NOT NULL, request_id TEXT, reason TEXT, idempotency_key TEXT,"
        " uncollected BIGINT NOT NULL, held BIGINT NOT NULL)",
        f"CREATE INDEX IF NOT EXISTS {ENTRIES_TABLE}_account ON {ENTRIES_TABLE} (account_id, position)",
        f"CREATE INDEX IF NOT EXISTS {ENTRIES_TABLE}_account_at ON {ENTRIES_TABLE} (account_id, at)",
        f"CREATE INDEX IF NOT EXISTS {ENTRIES_TABLE}_at ON {ENTRIES_TABLE} (at)",
    )
    TABLES = (ENTRIES_TABLE,)
    # the position of the account's first row at or after a time; _NO_BOUND when there is none
    _BOUND = f"COALESCE((SELECT MIN(position) FROM {ENTRIES_TABLE} WHERE account_id = ? AND at >= ?), {_NO_BOUND})"

    def __init__(self, store: SqlStore) -> None:
        self.store = store

    def list_entries(
        self, account_id: UUID, since: datetime | None = None, until: datetime | None = None, limit: int | None = None
    ) -> list[LedgerEntry]:
        clauses = ["account_id = ?"]
        params: list[Any] = [account_id.hex]
        for clause, bound in (("position >= ", since), ("position < ", until)):
            if bound is not None:
                clauses.append(clause + self._BOUND)
                params += [account_id.hex, self.store.to_db_time(bound)]
        sql = f"SELECT {', '.join(COLUMNS)} FROM {ENTRIES_TABLE} WHERE {' AND '.join(clauses)} ORDER BY position"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return [self._entry(row) for row in self.store.query(sql, params)]

    def opening_balance(self, account_id: UUID, since: datetime | None) -> int:
        return 0 if since is None else self._balance_before(account_id, since)

    def closing_balance(self, account_id: UUID, until: datetime | None = None) -> int:
        return self._balance_before(account_id, until)

    def window_positions(self, since: datetime | None, until: datetime | None) -> tuple[int, int]:
        def first_at(at: datetime) -> int:
            rows = self.store.query(
                f"SELECT MIN(position) FROM {ENTRIES_TABLE} WHERE at >= ?", [self.store.to_db_time(at)]
            )
            return int(rows[0][0]) if rows and rows[0][0] is not None else _NO_BOUND

        return (0 if since is None else first_at(since)), (_NO_BOUND if until is None else first_at(until))

    def iter_entries(self, start: int, stop: int, batch: int = 10_000) -> Iterator[LedgerEntry]:
        return (self._entry(row) for row in self._rows(start, stop, batch))

    def iter_plain_entries(self, start: int, stop: int, batch: int = 10_000) -> Iterator[tuple[Any, ...]]:
        # Straight from the rows: SQLite keeps times as exactly this text; PostgreSQL gives datetimes.
        for row in self._rows(start, stop, batch):
            yield row if isinstance(row[2], str) else (row[0], row[1], plain_time(row[2]), *row[3:])

    def _rows(self, start: int, stop: int, batch: int) -> Iterator[tuple[Any, ...]]:
        """Raw rows with ``start <= position < stop`` in position order, ``batch`` per query."""
        after = start - 1
        while True:
            rows = self.store.query(
                f"SELECT {', '.join(COLUMNS)} FROM {ENTRIES_TABLE} WHERE position > ? AND position < ?"
                " ORDER BY position LIMIT ?",
                [after, stop, batch],
            )
            yield from rows
            if len(rows) < batch:
                return
            after = int(rows[-1][0])

    def list_closing_balances(self) -> dict[UUID, tuple[int, int]]:
        rows = self.store.query(
            f"SELECT e.account_id, e.balance, c.n FROM {ENTRIES_TABLE} e JOIN"
            f" (SELECT account_id, MAX(position) AS last, COUNT(*) AS n FROM {ENTRIES_TABLE} GROUP BY account_id) c"
            " ON e.position = c.last"
        )
        return {UUID(account): (int(balance), int(n)) for account, balance, n in rows}

    def apply(self, tx: SqlTransaction, entries: list[LedgerEntry]) -> None:
        # Each row's balance is the account's latest row's balance plus its amount, read
        # inside this transaction: executemany inserts in order and sees its own rows.
        others = [c for c in COLUMNS if c != "balance"]
        tx.executemany(
            f"INSERT INTO {ENTRIES_TABLE} ({', '.join(others)}, balance)"
            f" VALUES ({', '.join('?' * len(others))},"
            f" COALESCE((SELECT prev.balance FROM {ENTRIES_TABLE} prev WHERE prev.account_id = ?"
            " ORDER BY prev.position DESC LIMIT 1), 0) + ?)",
            [self._params(entry) for entry in sorted(entries, key=_position)],
        )

    def clear(self, tx: SqlTransaction) -> None:
        tx.execute(f"DELETE FROM {ENTRIES_TABLE}")

    def _balance_before(self, account_id: UUID, at: datetime | None) -> int:
        where, params = "account_id = ?", [account_id.hex]
        if at is not None:
            where += " AND position < " + self._BOUND
            params += [account_id.hex, self.store.to_db_time(at)]
        rows = self.store.query(
            f"SELECT balance FROM {ENTRIES_TABLE} WHERE {where} ORDER BY position DESC LIMIT 1", params
        )
        return int(rows[0][0]) if rows else 0

    def _params(self, entry: LedgerEntry) -> tuple[Any, ...]:
        """``apply``'s parameters: the columns but ``balance`` in ``COLUMNS`` order, then the
        account again and the amount (for the running balance)."""
        account = entry.account_id.hex
        request = entry.request_id
        return (
            entry.position,
            account,
            self.store.to_db_time(entry.at),
            entry.kind,
            entry.amount,
            request.hex if request else None,
            entry.reason,
            entry.idempotency_key,
            entry.uncollected,
            entry.held,
            account,
            entry.amount,
        )

    def _entry(self, row: tuple[Any, ...]) -> LedgerEntry:
        values = dict(zip(COLUMNS, row, strict=True))
        values.update(
            position=int(values["position"]),
            account_id=UUID(values["account_id"]),
            at=self.store.from_db_time(values["at"]),
            request_id=UUID(values["request_id"]) if values["request_id"] else None,
            amount=int(values["amount"]),
            balance=int(values["balance"]),
            uncollected=int(values["uncollected"]),
            held=int(values["held"]),
        )
        return LedgerEntry(**values)
