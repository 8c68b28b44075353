"""A ledger with voided requests (application/voids.py: plain requests answered 503
``store_unavailable``), on a real SQLite event store and read models: ``verify`` passes, the
read models equal a rebuild from zero, the refund names ``store_unavailable`` in the ledger
entries and the balance nets charge and refund to zero; a replay under a new price book
leaves the refunded request out (never charged again) and re-prices only what was served."""

import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import OperationalError

from adapters.crypto.aes_gcm import AesGcmKeyVault
from adapters.crypto.key_digest import HmacApiKeyScheme
from adapters.http.errors import status_of
from adapters.settings import DatabaseConfig
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.billing import Receipt, RequestBilling, RequestShape
from application.health import CredentialHealth
from application.ledger import Ledger
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from application.replay import Replayer, ReplayPlan
from application.routing import Router
from application.verify import LedgerVerifier
from application.voids import REFUND_REASON
from domain.pricing import ModelPrice
from domain.usage import Usage
from projections.read_models import ReadModels, build_read_models
from tests.support.routes import first_route
from tests.unit.test_store_unavailable_void import AmbiguousStore, net_charge

MODEL = "openai/gpt-test"
PRICE = price_from_credits(input="2", output="8")
GRANT = 10**12
SHAPE = RequestShape(model=MODEL, prompt_bytes=400, max_output_tokens=200, choices=1, stream=False)
USAGE = Usage(input_tokens=90, output_tokens=40)


@dataclass
class Books:
    ledger: Ledger
    read_models: ReadModels
    database: DatabaseConfig
    served: Receipt
    refunded: UUID  # answered 503, its settlement had landed: charged, then refunded
    released: UUID  # answered 503, its settlement never landed: released


@pytest.fixture
def books(tmp_path: Path) -> Iterator[Books]:
    database = DatabaseConfig(kind="sqlite", sqlite_path=tmp_path / "tallyhub.sqlite")
    ledger = Ledger(
        database.eventsourcing_env(create_tables=True),
        vault=AesGcmKeyVault(os.urandom(32)),
        key_scheme_factory=HmacApiKeyScheme,
    )
    ledger.initialise()
    ProviderRegistry(ledger).register_provider("openai", "openai", base_url=None, region=None, secret="sk-test-0001")
    Prices(ledger).set_price(MODEL, PRICE)
    Accounts(ledger).create_account("acme")
    Accounts(ledger).grant_credits("acme", GRANT)
    key = ApiKeys(ledger).issue_api_key("acme").plaintext
    billing = RequestBilling(
        ledger, Router(ledger, CredentialHealth()), mode="credits", hold_ttl=timedelta(minutes=5), status_of=status_of
    )
    store = AmbiguousStore(ledger)
    account_id = ledger.get_account("acme").id

    def answered_503(fate: str) -> UUID:
        opened = billing.open_request(key, SHAPE)
        route = first_route(billing, opened)
        store.fate = fate
        with pytest.raises(OperationalError) as raised:
            billing.complete_request(opened, route, USAGE)
        assert ledger.change_account(account_id, billing.void(opened, raised.value, route, ()))
        return opened.request_id

    opened = billing.open_request(key, SHAPE)
    served = billing.complete_request(opened, first_route(billing, opened), USAGE)
    refunded, released = answered_503("unconfirmed"), answered_503("refused")
    read_models = build_read_models(database, ledger)
    read_models.create_tables()
    yield Books(ledger, read_models, database, served, refunded, released)
    read_models.close()
    ledger.close()


def read_model_tables(database: DatabaseConfig) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(database.read_models_sqlite_path) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {name: sorted(conn.execute(f"SELECT * FROM {name}").fetchall(), key=repr) for name in names}


def test_a_ledger_with_voided_requests_verifies_and_its_read_models_equal_a_rebuild(books: Books) -> None:
    report = LedgerVerifier(books.ledger, books.read_models).verify(deep=True)
    assert report.problems == []
    assert report.checked["charges"] == 2 and report.checked["open_holds"] == 0  # served + refunded
    before = read_model_tables(books.database)
    assert (
        len(before["th_rm_request_log"]) == 3 and len(before["th_rm_ledger_entries"]) == 4
    )  # grant, 2 charges, refund
    books.read_models.runner.rebuild()
    assert read_model_tables(books.database) == before


def test_the_refund_names_store_unavailable_and_charge_and_refund_net_zero(books: Books) -> None:
    books.read_models.runner.catch_up()
    with sqlite3.connect(books.database.read_models_sqlite_path) as conn:
        entries = conn.execute(
            "SELECT kind, amount, reason FROM th_rm_ledger_entries WHERE request_id = ? ORDER BY position",
            (books.refunded.hex,),
        ).fetchall()
        (balance,) = conn.execute("SELECT balance FROM th_rm_balances").fetchone()
    (charge_kind, charged, _), (refund_kind, refunded, reason) = entries
    assert (charge_kind, refund_kind) == ("charge", "refund")
    assert charged == -refunded and refunded > 0
    assert reason == REFUND_REASON and "store_unavailable" in reason
    assert balance == GRANT - books.served.charge
    assert net_charge(books.ledger, books.refunded) == 0 and net_charge(books.ledger, books.released) == 0
    released = books.ledger.get_request_record(books.released).details
    assert (released.status, released.error_code) == (503, "store_unavailable")


def test_a_replay_under_new_prices_leaves_the_refunded_request_out_and_charges_it_nothing(books: Books) -> None:
    doubled = replace(PRICE, input=PRICE.input * 2, output=PRICE.output * 2)
    assert isinstance(doubled, ModelPrice)
    report = Replayer(books.ledger).apply(ReplayPlan({MODEL: doubled}))
    assert (report.charges, report.refunded_skipped) == (1, 1)
    assert report.difference == books.served.cost  # only the served request is re-priced (doubled)
    assert books.ledger.get_account("acme").balance == GRANT - 2 * books.served.charge
    assert LedgerVerifier(books.ledger, books.read_models).verify().problems == []
