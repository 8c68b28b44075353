"""The ledger-entries contract on SQLite files and on PostgreSQL (a fresh schema per
backend opened, dropped at the end of the session), plus what only SQL stores do: the
running balance is read from the table itself, so it continues across restarts."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from uuid import uuid4

import psycopg
import pytest

from adapters.settings import DatabaseConfig
from projections.read_models import ReadModels, build_read_models
from tests.conftest import PgSchemas
from tests.integration.projections.conftest import PG
from tests.unit.projections.test_ledger_entries import (
    NANO,
    Backend,
    LedgerEntriesContract,
    MovementsLedger,
    OpenBackend,
    all_entries,
    check_running_balances,
)

NewDatabase = Callable[[], DatabaseConfig]


def open_sql_backend(new_database: NewDatabase) -> OpenBackend:
    @contextmanager
    def open_() -> Iterator[Backend]:
        database = new_database()
        ledger = MovementsLedger(env=database.eventsourcing_env(create_tables=True))
        read_models = build_read_models(database, ledger)
        try:
            read_models.create_tables()
            yield ledger, read_models
        finally:
            read_models.close()
            ledger.close()

    return open_


class SqlLedgerEntriesContract(LedgerEntriesContract):
    history_examples = 25

    @pytest.fixture
    def open_backend(self, new_database: NewDatabase) -> OpenBackend:
        return open_sql_backend(new_database)

    def test_sql_rows_equal_the_in_memory_rows(self, backend: Backend) -> None:
        ledger, read_models = backend
        accounts = [ledger.open_account(name) for name in ("alice", "bob")]
        for i in range(9):
            account = accounts[i % 2]
            ledger.grant(account, NANO + i)
            request_id = uuid4()
            ledger.hold(account, request_id, 10_000)
            ledger.settle(account, request_id, 5_000 * i)
            if i % 3 == 0:
                ledger.refund(account, request_id, 7)
            else:
                ledger.adjust(account, -NANO - 1)
        in_memory = build_read_models(None, ledger)
        read_models.runner.batch_size = 4
        read_models.runner.catch_up()
        in_memory.runner.catch_up()
        assert all_entries(read_models, accounts) == all_entries(in_memory, accounts)
        assert any(row["uncollected"] for row in all_entries(read_models, accounts))  # capped debits were stored

    def test_a_restarted_projection_continues_each_running_balance_from_the_table(
        self, new_database: NewDatabase
    ) -> None:
        database = new_database()
        ledger = MovementsLedger(env=database.eventsourcing_env(create_tables=True))
        made: list[ReadModels] = []
        try:
            made.append(build_read_models(database, ledger))
            made[0].create_tables()
            alice = ledger.open_account("alice")
            ledger.grant(alice, 100)
            ledger.adjust(alice, -30)
            made[0].runner.catch_up()
            made[0].close()

            ledger.grant(alice, 5)
            made.append(build_read_models(database, ledger))  # another process, or after a restart
            made[1].runner.catch_up()
            assert made[1].ledger is not None
            rows = made[1].ledger.list_entries(alice)
            assert [(r.amount, r.balance) for r in rows] == [(100, 100), (-30, 70), (5, 75)]
            check_running_balances(rows)
        finally:
            for read_models in made[1:]:
                read_models.close()
            ledger.close()


class TestSqliteLedgerEntries(SqlLedgerEntriesContract):
    @pytest.fixture
    def new_database(self, tmp_path: Path) -> NewDatabase:
        counter = itertools.count()

        def new() -> DatabaseConfig:
            directory = tmp_path / f"db-{next(counter)}"
            directory.mkdir()
            return DatabaseConfig(kind="sqlite", sqlite_path=directory / "tallyhub.sqlite")

        return new


class TestPostgresLedgerEntries(SqlLedgerEntriesContract):
    history_examples = 15  # a schema and two connection pools per example

    @pytest.fixture
    def new_database(self, pg_schemas: PgSchemas) -> NewDatabase:
        try:
            psycopg.connect(**PG, connect_timeout=3).close()  # type: ignore[arg-type]
        except psycopg.OperationalError as error:
            pytest.skip(f"PostgreSQL is not available on 127.0.0.1:5432: {error}")

        def new() -> DatabaseConfig:
            return DatabaseConfig(
                kind="postgres",
                host=str(PG["host"]),
                port=int(PG["port"]),
                user=str(PG["user"]),
                dbname=str(PG["dbname"]),
                schema=pg_schemas.new(),
            )

        return new
