"""Balances and open holds, per account, as the ``Account`` aggregate computes them.

Invariants kept here (tests/unit/projections/test_balances.py checks them against the
aggregate):
- ``balance = granted_total − charged_total + refunded_total + adjusted_total −
  expired_total`` and it equals ``Account.balance``;
- ``held`` is the sum of the account's open holds and equals ``Account.held``;
  ``available = balance − held``;
- a hold row exists exactly while the aggregate holds it: placed opens it, settled or
  released closes it;
- a grant row exists for every grant with ``expires_at``: ``expired`` sums its
  ``GrantExpired`` events and ``expired_at`` is set by the first (its deadline being
  applied), so ``list_due_grants(now)`` is what the sweep still has to expire, and
  ``expired_total`` is the sum of the account's ``expired``.
A batch of events is folded into per-account deltas first, so applying it costs one
upsert per account touched however many events it holds; the deltas are additive,
so any split of the history into batches ends in identical rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.domain import DomainEvent, DomainEventProtocol
from eventsourcing.utils import get_topic

from domain.account import Account
from domain.slots_init import slots_init
from projections.memory import InMemoryStore, MemoryTransaction
from projections.store import SqlStore, SqlTransaction

BALANCES_TABLE = "th_rm_balances"
HOLDS_TABLE = "th_rm_open_holds"
GRANTS_TABLE = "th_rm_expiring_grants"


@dataclass(frozen=True)
class Balance:
    account_id: UUID
    name: str
    balance: int
    held: int
    available: int
    granted_total: int
    charged_total: int
    uncollected_total: int
    refunded_total: int
    adjusted_total: int
    updated_at: datetime
    expired_total: int = 0


@dataclass(frozen=True)
class ExpiringGrant:
    account_id: UUID
    grant: int  # the account version of its CreditGranted event
    amount: int
    expires_at: datetime
    expired: int = 0  # what has left the balance so far
    expired_at: datetime | None = None  # when its deadline was applied


@slots_init  # one built per request held: domain/slots_init.py
@dataclass(frozen=True, slots=True)
class OpenHold:
    account_id: UUID
    request_id: UUID
    amount: int
    expires_at: datetime


@dataclass
class AccountDelta:
    updated_at: datetime
    name: str | None = None
    balance: int = 0
    held: int = 0
    granted: int = 0
    charged: int = 0
    uncollected: int = 0
    refunded: int = 0
    adjusted: int = 0
    expired: int = 0


@dataclass
class BalanceChanges:
    accounts: dict[UUID, AccountDelta] = field(default_factory=dict)
    opened: dict[tuple[UUID, UUID], OpenHold] = field(default_factory=dict)
    closed: set[tuple[UUID, UUID]] = field(default_factory=set)
    grants: dict[tuple[UUID, int], ExpiringGrant] = field(default_factory=dict)
    expired: dict[tuple[UUID, int], list[Any]] = field(default_factory=dict)  # -> [amount, deadline applied at]


def fold_balances(events: Iterable[DomainEventProtocol[Any]]) -> BalanceChanges:
    changes = BalanceChanges()
    for event in events:
        account_id = event.originator_id
        at = _timestamp(event)
        delta = changes.accounts.setdefault(account_id, AccountDelta(updated_at=at))
        delta.updated_at = at
        if isinstance(event, Account.Created):
            delta.name = event.name
        elif isinstance(event, Account.CreditGranted):
            delta.balance += event.amount
            delta.granted += event.amount
            if event.expires_at is not None:  # None too in a grant stored before grants expired
                grant = ExpiringGrant(account_id, event.originator_version, event.amount, event.expires_at)
                changes.grants[(account_id, grant.grant)] = grant
        elif isinstance(event, Account.GrantExpired):
            delta.balance -= event.amount
            delta.expired += event.amount
            expired = changes.expired.setdefault((account_id, event.grant), [0, None])
            expired[0] += event.amount
            if event.request_id is None and expired[1] is None:
                expired[1] = at
        elif isinstance(event, Account.HoldPlaced):
            hold = OpenHold(account_id, event.request_id, event.amount, event.expires_at)
            delta.held += hold.amount
            changes.opened[(account_id, hold.request_id)] = hold
        elif isinstance(event, Account.HoldSettled):
            delta.balance -= event.amount
            delta.charged += event.amount
            delta.uncollected += event.uncollected
            delta.held -= event.held
            _close(changes, account_id, event.request_id)
        elif isinstance(event, Account.ChargeRefunded):
            delta.balance += event.amount
            delta.refunded += event.amount
        elif isinstance(event, Account.Adjusted):
            delta.balance += event.amount
            delta.adjusted += event.amount
        elif isinstance(event, Account.HoldReleased):
            delta.held -= event.amount
            _close(changes, account_id, event.request_id)
    return changes


def _timestamp(event: DomainEventProtocol[Any]) -> datetime:
    """When ``event`` happened (every Account event is an eventsourcing ``DomainEvent``)."""
    assert isinstance(event, DomainEvent)
    return event.timestamp


def _close(changes: BalanceChanges, account_id: UUID, request_id: UUID) -> None:
    key = (account_id, request_id)
    if changes.opened.pop(key, None) is None:
        changes.closed.add(key)


class BalancesView(Protocol):
    def get_balance(self, account_id: UUID) -> Balance | None: ...

    def list_balances(self) -> list[Balance]: ...

    def list_open_holds(self, account_id: UUID) -> list[OpenHold]: ...

    def list_expired_holds(self, now: datetime) -> list[OpenHold]: ...

    def list_due_grants(self, now: datetime) -> list[ExpiringGrant]:
        """Grants whose deadline is at or before ``now`` and not applied yet, soonest first."""

    def apply(self, tx: Any, changes: BalanceChanges) -> None: ...

    def clear(self, tx: Any) -> None: ...


class BalancesProjection:
    name = "balances"
    schema_version = 1  # raise it when its tables or rows change: projections/store.py Schema
    topics = frozenset(
        get_topic(cls)
        for cls in (
            Account.Created,
            Account.CreditGranted,
            Account.HoldPlaced,
            Account.HoldSettled,
            Account.HoldReleased,
            Account.ChargeRefunded,
            Account.Adjusted,
            Account.GrantExpired,
        )
    )

    def __init__(self, view: BalancesView) -> None:
        self.view = view

    def process(self, tx: Any, events: list[DomainEventProtocol[Any]]) -> None:
        self.view.apply(tx, fold_balances(events))

    def clear(self, tx: Any) -> None:
        self.view.clear(tx)


class InMemoryBalancesView:
    def __init__(self, store: InMemoryStore) -> None:
        self._lock = store.lock
        self._balances: dict[UUID, Balance] = {}
        self._holds: dict[tuple[UUID, UUID], OpenHold] = {}
        self._grants: dict[tuple[UUID, int], ExpiringGrant] = {}

    def get_balance(self, account_id: UUID) -> Balance | None:
        with self._lock:
            return self._balances.get(account_id)

    def list_balances(self) -> list[Balance]:
        with self._lock:
            return sorted(self._balances.values(), key=lambda b: (b.name, b.account_id.hex))

    def list_open_holds(self, account_id: UUID) -> list[OpenHold]:
        with self._lock:
            holds = [h for (a, _), h in self._holds.items() if a == account_id]
        return sorted(holds, key=lambda h: (h.expires_at, h.request_id.hex))

    def list_expired_holds(self, now: datetime) -> list[OpenHold]:
        with self._lock:
            holds = [h for h in self._holds.values() if h.expires_at <= now]
        return sorted(holds, key=lambda h: (h.expires_at, h.request_id.hex))

    def list_due_grants(self, now: datetime) -> list[ExpiringGrant]:
        with self._lock:
            due = [g for g in self._grants.values() if g.expired_at is None and g.expires_at <= now]
        return sorted(due, key=lambda g: (g.expires_at, g.account_id.hex, g.grant))

    def apply(self, tx: MemoryTransaction, changes: BalanceChanges) -> None:
        tx.on_commit(lambda: self._apply(changes))

    def clear(self, tx: MemoryTransaction) -> None:
        tx.on_commit(self._clear)

    def _clear(self) -> None:
        self._balances.clear()
        self._holds.clear()
        self._grants.clear()

    def _apply(self, changes: BalanceChanges) -> None:
        for account_id, d in changes.accounts.items():
            old = self._balances.get(account_id) or Balance(account_id, "", 0, 0, 0, 0, 0, 0, 0, 0, d.updated_at)
            balance, held = old.balance + d.balance, old.held + d.held
            self._balances[account_id] = replace(
                old,
                name=old.name if d.name is None else d.name,
                balance=balance,
                held=held,
                available=balance - held,
                granted_total=old.granted_total + d.granted,
                charged_total=old.charged_total + d.charged,
                uncollected_total=old.uncollected_total + d.uncollected,
                refunded_total=old.refunded_total + d.refunded,
                adjusted_total=old.adjusted_total + d.adjusted,
                updated_at=d.updated_at,
                expired_total=old.expired_total + d.expired,
            )
        for hold_key in changes.closed:
            self._holds.pop(hold_key, None)
        self._holds.update(changes.opened)
        self._grants.update(changes.grants)
        for key, (amount, at) in changes.expired.items():
            grant = self._grants.get(key)
            if grant is not None:
                self._grants[key] = replace(grant, expired=grant.expired + amount, expired_at=grant.expired_at or at)


class SqlBalancesView:
    DDL = (
        f"CREATE TABLE IF NOT EXISTS {BALANCES_TABLE} ("
        " account_id TEXT PRIMARY KEY, name TEXT,"
        " balance BIGINT NOT NULL, held BIGINT NOT NULL,"
        " granted_total BIGINT NOT NULL, charged_total BIGINT NOT NULL, uncollected_total BIGINT NOT NULL,"
        " refunded_total BIGINT NOT NULL, adjusted_total BIGINT NOT NULL,"
        " updated_at TIMESTAMPTZ NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {HOLDS_TABLE} ("
        " account_id TEXT NOT NULL, request_id TEXT NOT NULL,"
        " amount BIGINT NOT NULL, expires_at TIMESTAMPTZ NOT NULL,"
        " PRIMARY KEY (account_id, request_id))",
        f"CREATE TABLE IF NOT EXISTS {GRANTS_TABLE} ("
        " account_id TEXT NOT NULL, grant_version BIGINT NOT NULL, amount BIGINT NOT NULL,"
        " expires_at TIMESTAMPTZ NOT NULL, expired BIGINT NOT NULL, expired_at TIMESTAMPTZ,"
        " PRIMARY KEY (account_id, grant_version))",
        f"CREATE INDEX IF NOT EXISTS {GRANTS_TABLE}_due ON {GRANTS_TABLE} (expires_at) WHERE expired_at IS NULL",
    )
    TABLES = (BALANCES_TABLE, HOLDS_TABLE, GRANTS_TABLE)
    _COLUMNS = (
        "account_id, name, balance, held, balance - held, granted_total, charged_total, uncollected_total,"
        " refunded_total, adjusted_total, updated_at,"
        f" COALESCE((SELECT SUM(g.expired) FROM {GRANTS_TABLE} g WHERE g.account_id = {BALANCES_TABLE}.account_id), 0)"
    )
    _GRANT_COLUMNS = "account_id, grant_version, amount, expires_at, expired, expired_at"

    def __init__(self, store: SqlStore) -> None:
        self.store = store

    def get_balance(self, account_id: UUID) -> Balance | None:
        rows = self.store.query(f"SELECT {self._COLUMNS} FROM {BALANCES_TABLE} WHERE account_id = ?", (account_id.hex,))
        return self._balance(rows[0]) if rows else None

    def list_balances(self) -> list[Balance]:
        rows = self.store.query(f"SELECT {self._COLUMNS} FROM {BALANCES_TABLE} ORDER BY name, account_id")
        return [self._balance(row) for row in rows]

    def list_open_holds(self, account_id: UUID) -> list[OpenHold]:
        rows = self.store.query(
            f"SELECT account_id, request_id, amount, expires_at FROM {HOLDS_TABLE}"
            " WHERE account_id = ? ORDER BY expires_at, request_id",
            (account_id.hex,),
        )
        return [OpenHold(UUID(a), UUID(r), int(amount), self._time(at)) for a, r, amount, at in rows]

    def list_expired_holds(self, now: datetime) -> list[OpenHold]:
        rows = self.store.query(
            f"SELECT account_id, request_id, amount, expires_at FROM {HOLDS_TABLE}"
            " WHERE expires_at <= ? ORDER BY expires_at, request_id",
            (self.store.to_db_time(now),),
        )
        return [OpenHold(UUID(a), UUID(r), int(amount), self._time(at)) for a, r, amount, at in rows]

    def list_due_grants(self, now: datetime) -> list[ExpiringGrant]:
        rows = self.store.query(
            f"SELECT {self._GRANT_COLUMNS} FROM {GRANTS_TABLE}"
            " WHERE expired_at IS NULL AND expires_at <= ? ORDER BY expires_at, account_id, grant_version",
            (self.store.to_db_time(now),),
        )
        return [
            ExpiringGrant(UUID(a), int(grant), int(amount), self._time(at), int(expired), None)
            for a, grant, amount, at, expired, _ in rows
        ]

    def apply(self, tx: SqlTransaction, changes: BalanceChanges) -> None:
        tx.executemany(
            f"INSERT INTO {BALANCES_TABLE} (account_id, name, balance, held, granted_total, charged_total,"
            " uncollected_total, refunded_total, adjusted_total, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            f" ON CONFLICT (account_id) DO UPDATE SET name = COALESCE(excluded.name, {BALANCES_TABLE}.name),"
            f" balance = {BALANCES_TABLE}.balance + excluded.balance, held = {BALANCES_TABLE}.held + excluded.held,"
            f" granted_total = {BALANCES_TABLE}.granted_total + excluded.granted_total,"
            f" charged_total = {BALANCES_TABLE}.charged_total + excluded.charged_total,"
            f" uncollected_total = {BALANCES_TABLE}.uncollected_total + excluded.uncollected_total,"
            f" refunded_total = {BALANCES_TABLE}.refunded_total + excluded.refunded_total,"
            f" adjusted_total = {BALANCES_TABLE}.adjusted_total + excluded.adjusted_total,"
            " updated_at = excluded.updated_at",
            [
                (
                    a.hex,
                    d.name,
                    d.balance,
                    d.held,
                    d.granted,
                    d.charged,
                    d.uncollected,
                    d.refunded,
                    d.adjusted,
                    self.store.to_db_time(d.updated_at),
                )
                for a, d in changes.accounts.items()
            ],
        )
        tx.executemany(
            f"DELETE FROM {HOLDS_TABLE} WHERE account_id = ? AND request_id = ?",
            [(a.hex, r.hex) for a, r in sorted(changes.closed)],
        )
        tx.executemany(
            f"INSERT INTO {HOLDS_TABLE} (account_id, request_id, amount, expires_at) VALUES (?, ?, ?, ?)",
            [
                (h.account_id.hex, h.request_id.hex, h.amount, self.store.to_db_time(h.expires_at))
                for h in changes.opened.values()
            ],
        )
        tx.executemany(
            f"INSERT INTO {GRANTS_TABLE} ({self._GRANT_COLUMNS}) VALUES (?, ?, ?, ?, 0, NULL)",
            [
                (g.account_id.hex, g.grant, g.amount, self.store.to_db_time(g.expires_at))
                for g in changes.grants.values()
            ],
        )
        tx.executemany(
            f"UPDATE {GRANTS_TABLE} SET expired = expired + ?, expired_at = COALESCE(expired_at, ?)"
            " WHERE account_id = ? AND grant_version = ?",
            [
                (amount, self.store.to_db_time(at), a.hex, grant)
                for (a, grant), (amount, at) in sorted(changes.expired.items())
            ],
        )

    def clear(self, tx: SqlTransaction) -> None:
        for table in self.TABLES:
            tx.execute(f"DELETE FROM {table}")

    def _time(self, value: Any) -> datetime:
        at = self.store.from_db_time(value)
        assert at is not None
        return at

    def _balance(self, row: tuple[Any, ...]) -> Balance:
        (
            account_id,
            name,
            balance,
            held,
            available,
            granted,
            charged,
            uncollected,
            refunded,
            adjusted,
            updated_at,
            expired_total,
        ) = row
        return Balance(
            UUID(account_id),
            name or "",
            int(balance),
            int(held),
            int(available),
            int(granted),
            int(charged),
            int(uncollected),
            int(refunded),
            int(adjusted),
            self._time(updated_at),
            int(expired_total),
        )
