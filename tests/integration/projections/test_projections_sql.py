"""The read-model contract on SQLite files and on PostgreSQL, plus what only SQL stores do."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import timedelta

import psycopg
import pytest

from adapters.settings import DatabaseConfig
from projections.read_models import ReadModels, build_read_models
from tests.unit.projections.projection_contract import T0, FakeLedger, ProjectionContract, busy_history, snapshot


class SqlContract(ProjectionContract):
    @pytest.fixture
    def ledger(self, database: DatabaseConfig) -> Iterator[FakeLedger]:
        app = FakeLedger(env=database.eventsourcing_env(create_tables=True))
        yield app
        app.close()

    def test_sql_views_return_exactly_what_the_in_memory_views_return(
        self, ledger: FakeLedger, read_models: ReadModels
    ) -> None:
        busy_history(ledger)
        ledger.record(T0 + timedelta(days=3, microseconds=7), failed=True)
        in_memory = build_read_models(None, ledger)
        read_models.runner.catch_up()
        in_memory.runner.catch_up()
        assert snapshot(read_models) == snapshot(in_memory)

    def test_one_pass_reads_and_decodes_each_event_once_and_a_projection_behind_still_gets_all(
        self, ledger: FakeLedger, read_models: ReadModels, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        busy_history(ledger)
        reads, decodes = [], []
        select, decode = ledger.recorder.select_notifications, ledger.mapper.to_domain_event
        monkeypatch.setattr(ledger.recorder, "select_notifications", lambda *a, **k: reads.append(a) or select(*a, **k))
        monkeypatch.setattr(ledger.mapper, "to_domain_event", lambda n: decodes.append(n.id) or decode(n))
        read_models.runner.batch_size = 7
        read_models.runner.catch_up()
        head = ledger.recorder.max_notification_id()
        assert len(reads) == head // 7 + 1  # every projection shared each batch; none read more
        assert len(decodes) == len(set(decodes)) == head  # each event decoded once for all projections
        monkeypatch.undo()
        read_models.runner.rebuild("ledger_entries")  # behind the others now, then caught up on its own
        ledger.grant(ledger.open_account("carol"), 3)
        read_models.runner.catch_up()
        in_memory = build_read_models(None, ledger)
        in_memory.runner.catch_up()
        assert snapshot(read_models) == snapshot(in_memory)
        assert read_models.ledger is not None and in_memory.ledger is not None
        assert list(read_models.ledger.iter_plain_entries(0, head + 10)) == list(
            in_memory.ledger.iter_plain_entries(0, head + 10)
        )
        assert len(list(read_models.ledger.iter_plain_entries(0, head + 10))) >= 7  # both grants, charges, carol's

    def test_create_tables_is_explicit_and_idempotent(self, database: DatabaseConfig, ledger: FakeLedger) -> None:
        read_models = build_read_models(database, ledger)
        try:
            ledger.open_account("alice")
            with pytest.raises((sqlite3.OperationalError, psycopg.errors.UndefinedTable)):
                read_models.balances.list_balances()
            read_models.create_tables()
            read_models.create_tables()
            assert read_models.runner.catch_up() == 2  # the creation to balances and to the audit log
            assert [b.name for b in read_models.balances.list_balances()] == ["alice"]
        finally:
            read_models.close()


class TestSqliteProjections(SqlContract):
    @pytest.fixture
    def database(self, sqlite_database: DatabaseConfig) -> DatabaseConfig:
        return sqlite_database

    def test_read_models_live_in_their_own_file_beside_the_event_store(
        self, database: DatabaseConfig, read_models: ReadModels
    ) -> None:
        assert database.sqlite_path is not None
        with sqlite3.connect(database.read_models_sqlite_path) as conn:
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert tables == {
            "th_rm_tracking",
            "th_rm_balances",
            "th_rm_open_holds",
            "th_rm_usage_hourly",
            "th_rm_request_log",
            "th_rm_ledger_entries",
            "th_rm_provider_hourly",
            "th_rm_expiring_grants",
            "th_rm_stopped",
            "th_rm_schema",
            "th_rm_request_tags",
            "th_rm_request_metadata",
            "th_rm_audit",
            "th_rm_audit_names",
        }
        assert database.sqlite_path.exists() and database.read_models_sqlite_path != database.sqlite_path


class TestPostgresProjections(SqlContract):
    @pytest.fixture
    def database(self, postgres_database: DatabaseConfig) -> DatabaseConfig:
        return postgres_database

    def test_tables_live_in_the_configured_schema_beside_the_event_store(
        self, database: DatabaseConfig, ledger: FakeLedger, read_models: ReadModels
    ) -> None:
        with psycopg.connect(database.conninfo()) as conn:
            rows = conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (database.schema,)
            )
            tables = {name for (name,) in rows}
        ours = {name for name in tables if name.startswith("th_rm_")}
        assert ours == {
            "th_rm_tracking",
            "th_rm_balances",
            "th_rm_open_holds",
            "th_rm_usage_hourly",
            "th_rm_request_log",
            "th_rm_ledger_entries",
            "th_rm_provider_hourly",
            "th_rm_expiring_grants",
            "th_rm_stopped",
            "th_rm_schema",
            "th_rm_request_tags",
            "th_rm_request_metadata",
            "th_rm_audit",
            "th_rm_audit_names",
        }
        assert tables - ours  # the event store's own tables, untouched

    def test_catch_up_without_waiting_skips_a_projection_another_process_is_applying(
        self, ledger: FakeLedger, make_read_models: Callable[[], ReadModels]
    ) -> None:
        first, second = make_read_models(), make_read_models()
        alice = ledger.open_account("alice")
        ledger.grant(alice, 5)
        with first.store.tracked("balances") as tx:
            assert tx is not None
            assert second.runner.catch_up(wait=False) == 3  # the grant to the ledger entries, both to the audit log
        assert second.runner.catch_up(wait=False) == 2
        row = first.balances.get_balance(alice)
        assert row is not None and row.balance == 5
