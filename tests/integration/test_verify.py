"""``verify`` on a real SQLite event store and read models: a clean ledger passes; a read
model or an event edited behind the ledger's back is found and named."""

import os
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from adapters.crypto.aes_gcm import AesGcmKeyVault
from adapters.crypto.key_digest import HmacApiKeyScheme
from adapters.http.errors import status_of
from adapters.settings import DatabaseConfig
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.billing import RequestBilling, RequestShape
from application.health import CredentialHealth
from application.ledger import Ledger
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from application.routing import Router
from application.verify import MOVEMENTS, LedgerVerifier
from domain.usage import Usage
from projections.ledger_entries import LedgerEntriesProjection
from projections.read_models import ReadModels, build_read_models
from tests.support.routes import first_route

MODEL = "openai/gpt-test"


@pytest.fixture
def database(tmp_path: Path) -> DatabaseConfig:
    return DatabaseConfig(kind="sqlite", sqlite_path=tmp_path / "tallyhub.sqlite")


@pytest.fixture
def ledger(database: DatabaseConfig) -> Iterator[Ledger]:
    app = Ledger(
        database.eventsourcing_env(create_tables=True),
        vault=AesGcmKeyVault(os.urandom(32)),
        key_scheme_factory=HmacApiKeyScheme,
    )
    app.initialise()
    ProviderRegistry(app).register_provider(
        "openai", "openai", base_url=None, region=None, secret="sk-test-secret-0001"
    )
    Prices(app).set_price(MODEL, price_from_credits(input="2", output="8"))
    Accounts(app).create_account("acme")
    Accounts(app).grant_credits("acme", 10**9)
    key = ApiKeys(app).issue_api_key("acme").plaintext
    billing = RequestBilling(
        app, Router(app, CredentialHealth()), mode="credits", hold_ttl=timedelta(minutes=5), status_of=status_of
    )
    for tokens in (10, 20, 30):
        opened = billing.open_request(
            key, RequestShape(model=MODEL, prompt_bytes=100, max_output_tokens=50, choices=1, stream=False)
        )
        billing.complete_request(opened, first_route(billing, opened), Usage(input_tokens=tokens, output_tokens=5))
    billing.open_request(
        key, RequestShape(model=MODEL, prompt_bytes=100, max_output_tokens=50, choices=1, stream=False)
    )  # left open
    yield app
    app.close()


@pytest.fixture
def read_models(database: DatabaseConfig, ledger: Ledger) -> Iterator[ReadModels]:
    built = build_read_models(database, ledger)
    built.create_tables()
    yield built
    built.close()


def test_a_clean_ledger_verifies(ledger: Ledger, read_models: ReadModels) -> None:
    report = LedgerVerifier(ledger, read_models).verify(deep=True)
    assert report.problems == []
    assert report.checked["charges"] == 3 and report.checked["request_records"] == 3
    assert report.checked["open_holds"] == 1


def test_a_read_model_edited_behind_the_ledger_is_named(
    ledger: Ledger, read_models: ReadModels, database: DatabaseConfig
) -> None:
    read_models.runner.catch_up()
    account = ledger.get_account("acme").id
    with sqlite3.connect(database.read_models_sqlite_path) as conn:
        conn.execute("UPDATE th_rm_balances SET balance = balance + 1")
    problems = LedgerVerifier(ledger, read_models).verify().problems
    assert problems == [
        f"account {account}: the events say balance {ledger.get_account('acme').balance}, held "
        f"{ledger.get_account('acme').held}; the balances read model says balance "
        f"{ledger.get_account('acme').balance + 1}, held {ledger.get_account('acme').held}"
    ]


def test_an_event_edited_in_the_store_is_found(
    ledger: Ledger, read_models: ReadModels, database: DatabaseConfig
) -> None:
    with sqlite3.connect(database.sqlite_path) as conn:
        rows = conn.execute("SELECT rowid, state FROM stored_events WHERE topic LIKE '%Account.HoldSettled'").fetchall()
        rowid, state = rows[0]
        edited = state.replace(b'"amount":', b'"amount":1', 1) if isinstance(state, bytes) else state
        conn.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (edited, rowid))
    ledger.repository.cache.clear() if ledger.repository.cache else None
    problems = LedgerVerifier(ledger, read_models).verify().problems
    assert any("charged 1" in problem and "but its record says" in problem for problem in problems), problems


def test_every_movement_the_ledger_entries_list_is_folded() -> None:
    assert set(MOVEMENTS) == set(LedgerEntriesProjection.topics)


def test_deep_finds_a_snapshot_that_disagrees_with_the_events(
    ledger: Ledger, read_models: ReadModels, database: DatabaseConfig
) -> None:
    account = ledger.get_account("acme")
    ledger._snapshot(account)  # as the ledger stores one every ACCOUNT_SNAPSHOT_INTERVAL events
    with sqlite3.connect(database.sqlite_path) as conn:
        (state,) = conn.execute("SELECT state FROM stored_snapshots").fetchone()
        edited = state.replace(b'"balance":', b'"balance":7', 1)
        assert edited != state
        conn.execute("UPDATE stored_snapshots SET state = ?", (edited,))
    ledger.repository.cache.get(account.id, evict=True)  # as a process starting afresh (LRUCache.clear keeps entries)
    assert LedgerVerifier(ledger, read_models).verify().problems == []  # only the deep check loads aggregates
    problems = LedgerVerifier(ledger, read_models).verify(deep=True).problems
    assert problems == [
        f"account {account.id}: the aggregate says balance 7{account.balance} with 1 holds; "
        f"its events say {account.balance} with 1"
    ]
