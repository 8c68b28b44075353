"""The grant-expiry read-model contract on SQLite files and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from adapters.settings import DatabaseConfig
from projections.read_models import ReadModels, build_read_models
from tests.unit.projections.test_grant_expiry_views import ExpiryLedger, GrantExpiryViewsContract


class SqlGrantExpiryContract(GrantExpiryViewsContract):
    @pytest.fixture
    def ledger(self, database: DatabaseConfig) -> Iterator[ExpiryLedger]:
        app = ExpiryLedger(env=database.eventsourcing_env(create_tables=True))
        yield app
        app.close()

    @pytest.fixture
    def make_read_models(self, database: DatabaseConfig, ledger: ExpiryLedger) -> Iterator[Callable[[], ReadModels]]:
        made: list[ReadModels] = []

        def make() -> ReadModels:
            read_models = build_read_models(database, ledger)
            if not made:
                read_models.create_tables()
            made.append(read_models)
            return read_models

        yield make
        for read_models in made:
            read_models.close()


class TestSqliteGrantExpiry(SqlGrantExpiryContract):
    @pytest.fixture
    def database(self, sqlite_database: DatabaseConfig) -> DatabaseConfig:
        return sqlite_database


class TestPostgresGrantExpiry(SqlGrantExpiryContract):
    @pytest.fixture
    def database(self, postgres_database: DatabaseConfig) -> DatabaseConfig:
        return postgres_database
