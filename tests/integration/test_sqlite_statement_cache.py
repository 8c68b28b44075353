"""The SQLite event store's connections keep a real cache of prepared statements
(adapters/persistence/sqlite_factory.py): eventsourcing's own ask ``sqlite3`` for a cache of
one, which compiled the group commit's INSERT again for most batches. Otherwise they are
eventsourcing's connections: WAL on a file database, rows as ``sqlite3.Row``."""

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from adapters.crypto.aes_gcm import AesGcmKeyVault
from adapters.crypto.key_digest import HmacApiKeyScheme
from adapters.persistence.sqlite_factory import STATEMENT_CACHE
from adapters.settings import DatabaseConfig
from application.accounts import Accounts
from application.ledger import Ledger


def test_the_store_the_settings_open_caches_its_statements_and_keeps_eventsourcings_connections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[dict[str, Any]] = []
    connect = sqlite3.connect

    def spy(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        opened.append(kwargs)
        return connect(*args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", spy)
    env = DatabaseConfig(kind="sqlite", sqlite_path=tmp_path / "store.sqlite").eventsourcing_env(create_tables=True)
    ledger = Ledger(env, vault=AesGcmKeyVault(os.urandom(32)), key_scheme_factory=HmacApiKeyScheme)
    ledger.initialise()
    Accounts(ledger).create_account("acme", starter_credits=5)
    assert ledger.get_account("acme").balance == 5
    assert opened and {kwargs["cached_statements"] for kwargs in opened} == {STATEMENT_CACHE} != {True}
    assert {kwargs["isolation_level"] for kwargs in opened} == {None}
    with ledger.factory.datastore.get_connection(commit=False) as connection:  # type: ignore[attr-defined]
        assert connection._sqlite_conn.row_factory is sqlite3.Row
        assert connection._sqlite_conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    ledger.close()
