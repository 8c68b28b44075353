"""The grant-expiry read-model contract on SQLite files and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adapters.settings import DatabaseConfig
from tests.unit.projections.test_grant_expiry_views import ExpiryLedger, GrantExpiryViewsContract


class SqlGrantExpiryContract(GrantExpiryViewsContract):
    @pytest.fixture
    def ledger(self, database: DatabaseConfig) -> Iterator[ExpiryLedger]:
        app = ExpiryLedger(env=database.eventsourcing_env(create_tables=True))
        yield app
        app.close()


class TestSqliteGrantExpiry(SqlGrantExpiryContract):
    @pytest.fixture
    def database(self, sqlite_database: DatabaseConfig) -> DatabaseConfig:
        return sqlite_database


class TestPostgresGrantExpiry(SqlGrantExpiryContract):
    @pytest.fixture
    def database(self, postgres_database: DatabaseConfig) -> DatabaseConfig:
        return postgres_database
