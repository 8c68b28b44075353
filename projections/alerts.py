"""Where the alert process (application/alerts.py ``AlertProcess``) keeps its state: one JSON
object per key (``account:<hex>``: the available balance, which thresholds are disarmed and
the account version they reflect; ``provider:<hex>``: its name; ``listeners``: the webhooks'
subscriptions), in memory or in the read models' SQL store. Only the accounts the process
follows have a row.

Invariant: the state is written only through ``save`` inside the runner's transaction for
the ``alerts`` projection, so it changes together with the process's tracked position.
``load`` reads inside that transaction, which holds the projection's tracking lock, so
nobody else changes these rows meanwhile.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from projections.memory import InMemoryStore, MemoryTransaction
from projections.store import SqlStore, SqlTransaction

ALERT_STATE_TABLE = "th_rm_alert_state"
_LOAD_CHUNK = 500


class InMemoryAlertStates:
    TABLES: tuple[str, ...] = ()

    def __init__(self, store: InMemoryStore) -> None:
        self._lock = store.lock
        self._states: dict[str, dict[str, Any]] = {}

    def load(self, tx: MemoryTransaction, keys: Collection[str]) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {key: json.loads(json.dumps(self._states[key])) for key in keys if key in self._states}

    def save(self, tx: MemoryTransaction, states: dict[str, dict[str, Any]]) -> None:
        copied = json.loads(json.dumps(states))
        tx.on_commit(lambda: self._states.update(copied))

    def clear(self, tx: MemoryTransaction) -> None:
        tx.on_commit(self._states.clear)


class SqlAlertStates:
    DDL = (f"CREATE TABLE IF NOT EXISTS {ALERT_STATE_TABLE} ( state_key TEXT PRIMARY KEY, state TEXT NOT NULL)",)
    TABLES = (ALERT_STATE_TABLE,)

    def __init__(self, store: SqlStore) -> None:
        self.store = store

    def load(self, tx: SqlTransaction, keys: Collection[str]) -> dict[str, dict[str, Any]]:
        wanted, found = sorted(keys), {}
        for start in range(0, len(wanted), _LOAD_CHUNK):
            chunk = wanted[start : start + _LOAD_CHUNK]
            marks = ", ".join("?" for _ in chunk)
            rows = tx.query(f"SELECT state_key, state FROM {ALERT_STATE_TABLE} WHERE state_key IN ({marks})", chunk)
            found.update({key: json.loads(state) for key, state in rows})
        return found

    def save(self, tx: SqlTransaction, states: dict[str, dict[str, Any]]) -> None:
        tx.executemany(
            f"INSERT INTO {ALERT_STATE_TABLE} (state_key, state) VALUES (?, ?)"
            " ON CONFLICT (state_key) DO UPDATE SET state = excluded.state",
            [(key, json.dumps(state, sort_keys=True)) for key, state in sorted(states.items())],
        )

    def clear(self, tx: SqlTransaction) -> None:
        tx.execute(f"DELETE FROM {ALERT_STATE_TABLE}")
