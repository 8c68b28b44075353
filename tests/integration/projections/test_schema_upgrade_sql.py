"""Read-model schema upgrades on SQLite and PostgreSQL (projections/store.py ``upgrade``).

A deployment whose request log was built by older code (schema version 1: no attribution
columns, no tags or metadata tables, no ``th_rm_schema`` row) is reopened by this code
(version 2): whether by ``tallyhub init`` (``create_tables``) or by the runner's first
catch-up, the request log alone is dropped, created anew and reset to zero in one
transaction, its lag shows in ``status`` until it is replayed, and it then holds exactly
the rows a rebuild from zero gives, the new columns filled. Of several processes
starting at once, exactly one upgrades."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import timedelta
from typing import Any

import pytest

from adapters.settings import DatabaseConfig
from projections.read_models import ReadModels, build_read_models
from projections.request_log import REQUESTS_TABLE, RequestLogProjection
from projections.store import SCHEMA_TABLE
from tests.unit.projections.projection_contract import T0, FakeLedger, busy_history

# The request log's columns at schema version 1 (before attribution), as that code built them.
V1_COLUMNS = (
    "request_id, at, account_id, api_key_id, provider, model, upstream_model, endpoint, outcome, status,"
    " error_code, stream, latency_ms, ttfb_ms, input_tokens, cached_input_tokens, output_tokens,"
    " reasoning_tokens, usage_source, charge, cost, price_book_version"
)
ATTRIBUTED = {"user": "end-user-9", "tags": ["team:ml"], "metadata": {"job": "nightly"}}


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> DatabaseConfig:
    return request.getfixturevalue(f"{request.param}_database")  # type: ignore[no-any-return]


@pytest.fixture
def ledger(database: DatabaseConfig) -> Iterator[FakeLedger]:
    app = FakeLedger(env=database.eventsourcing_env(create_tables=True))
    yield app
    app.close()


def rows(read_models: ReadModels) -> list[dict[str, Any]]:
    return [asdict(row) for row in read_models.requests.list_requests(limit=10_000)]


def built_by_version_1(read_models: ReadModels) -> None:
    """Turn the request log into what version-1 code left: its table with the old columns
    (and rows), no tags or metadata table, no schema versions kept at all."""
    with read_models.store.tracked("request_log") as tx:
        assert tx is not None
        tx.execute(f"CREATE TABLE old_request_log AS SELECT {V1_COLUMNS} FROM {REQUESTS_TABLE}")
        for table in (*RequestLogProjection(read_models.requests).view.TABLES, SCHEMA_TABLE):  # type: ignore[attr-defined]
            tx.execute(f"DROP TABLE {table}")
        tx.execute(f"ALTER TABLE old_request_log RENAME TO {REQUESTS_TABLE}")
    with pytest.raises(Exception, match="end_user"):
        read_models.store.query(f"SELECT end_user FROM {REQUESTS_TABLE}")


@pytest.fixture
def old_deployment(database: DatabaseConfig, ledger: FakeLedger) -> Iterator[Callable[[], ReadModels]]:
    """A history with attributed requests, its read models caught up by version-1 code;
    then a factory of read models by this code on the same database (a restarted process)."""
    busy_history(ledger)
    ledger.record(T0 + timedelta(hours=5), model="openai/dall-e-3", attribution=ATTRIBUTED)
    old = build_read_models(database, ledger)
    old.create_tables()
    old.runner.catch_up()
    built_by_version_1(old)
    made = [old]

    def reopen() -> ReadModels:
        made.append(build_read_models(database, ledger))
        return made[-1]

    yield reopen
    for read_models in made:
        read_models.close()


def positions(read_models: ReadModels) -> dict[str, int]:
    return {status.name: status.position for status in read_models.runner.status()}


@pytest.mark.parametrize("upgraded_by", ["init", "the runner's first catch-up"])
def test_a_request_log_built_at_version_1_is_rebuilt_at_version_2_with_the_new_columns_filled(
    old_deployment: Callable[[], ReadModels], ledger: FakeLedger, upgraded_by: str
) -> None:
    read_models = old_deployment()
    head = ledger.recorder.max_notification_id()
    before = positions(read_models)
    assert set(before.values()) == {head}

    if upgraded_by == "init":
        read_models.create_tables()
    else:
        assert read_models.runner.upgrade() == ["request_log"]
    lagging = {s.name: s.lag for s in read_models.runner.status() if s.lag}
    assert lagging == {"request_log": head}, "only the request log was reset; its lag shows until it is replayed"
    assert read_models.runner.upgrade() == [], "once per runner"

    read_models.runner.catch_up()
    upgraded = rows(read_models)
    assert positions(read_models) == before
    attributed = [row for row in upgraded if row["end_user"] is not None]
    fields = ("end_user", "tags", "metadata", "images")
    assert [tuple(r[f] for f in fields) for r in attributed if r["at"] == T0 + timedelta(hours=5)] == [
        ("end-user-9", ("team:ml",), (("job", "nightly"),), 1)
    ]
    tagged = read_models.requests.list_requests(tag="team:ml", limit=100)
    assert [r.request_id for r in tagged] == [r["request_id"] for r in upgraded if "team:ml" in r["tags"]] != []

    read_models.runner.rebuild("request_log")
    assert rows(read_models) == upgraded, "identical to a rebuild from zero"
    in_memory = build_read_models(None, ledger)
    in_memory.runner.catch_up()
    assert rows(in_memory) == upgraded


def test_a_store_at_the_current_versions_is_left_alone(old_deployment: Callable[[], ReadModels]) -> None:
    first = old_deployment()
    first.create_tables()
    first.runner.catch_up()
    kept = rows(first)
    again = old_deployment()
    assert again.runner.upgrade() == []
    again.create_tables()
    assert {s.name: s.lag for s in again.runner.status() if s.lag} == {}
    assert rows(again) == kept


def test_of_processes_starting_at_once_exactly_one_upgrades(old_deployment: Callable[[], ReadModels]) -> None:
    runners = [old_deployment().runner for _ in range(3)]
    start = threading.Barrier(len(runners))
    results: list[list[str]] = []

    def run(runner: Any) -> None:
        start.wait()
        results.append(runner.upgrade())

    threads = [threading.Thread(target=run, args=(runner,)) for runner in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [[], [], ["request_log"]]
