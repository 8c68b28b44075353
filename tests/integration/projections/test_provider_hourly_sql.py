"""The provider-rollups contract on SQLite files and on PostgreSQL, plus what only SQL
stores do: the rows equal the in-memory ones, and a restarted runner resumes mid-record."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from adapters.settings import DatabaseConfig
from projections.read_models import ReadModels, build_read_models
from tests.unit.projections.projection_contract import T0
from tests.unit.projections.test_provider_hourly import (
    FAILOVER_ROWS,
    ProviderHourlyContract,
    ProviderLedger,
    failover_history,
    merged,
    rows_of,
)


class SqlProviderHourlyContract(ProviderHourlyContract):
    @pytest.fixture
    def ledger(self, database: DatabaseConfig) -> Iterator[ProviderLedger]:
        app = ProviderLedger(env=database.eventsourcing_env(create_tables=True))
        yield app
        app.close()

    @pytest.fixture
    def read_models(self, database: DatabaseConfig, ledger: ProviderLedger) -> Iterator[ReadModels]:
        read_models = build_read_models(database, ledger)
        read_models.create_tables()
        yield read_models
        read_models.close()

    def test_sql_rows_equal_the_in_memory_rows(self, ledger: ProviderLedger, read_models: ReadModels) -> None:
        failover_history(ledger)
        ledger.served(T0 + timedelta(days=2, microseconds=7), credential=None, failed=True, status=402)
        ledger.served(T0 + timedelta(days=2, minutes=1), charge=123_456_789, provider_cost=None, source="estimated")
        in_memory = build_read_models(None, ledger)
        read_models.runner.catch_up()
        in_memory.runner.catch_up()
        assert rows_of(read_models) == rows_of(in_memory)
        assert read_models.providers is not None and in_memory.providers is not None
        assert read_models.providers.get_totals() == in_memory.providers.get_totals()

    def test_a_restarted_runner_counts_the_failover_of_a_record_cut_by_the_crash(
        self, database: DatabaseConfig, ledger: ProviderLedger, read_models: ReadModels
    ) -> None:
        failover_history(ledger)
        first = ledger.recorder.select_notifications(None, 1)  # the first record's Completed event only
        assert read_models.runner.apply("provider_hourly", first) == 1
        read_models.close()

        restarted = build_read_models(database, ledger)
        try:
            restarted.runner.catch_up()
            assert rows_of(restarted) == merged(FAILOVER_ROWS)
        finally:
            restarted.close()


class TestSqliteProviderHourly(SqlProviderHourlyContract):
    @pytest.fixture
    def database(self, sqlite_database: DatabaseConfig) -> DatabaseConfig:
        return sqlite_database


class TestPostgresProviderHourly(SqlProviderHourlyContract):
    @pytest.fixture
    def database(self, postgres_database: DatabaseConfig) -> DatabaseConfig:
        return postgres_database
