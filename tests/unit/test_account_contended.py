"""An account change that keeps losing its save to other writers (two ``serve`` workers on one
hot account) ends as ``AccountContended`` (application/ledger.py): an ``OperationalError``,
so the gateway answers it 503 ``store_unavailable`` in OpenAI's shape and keeps the
settlement or void pending (application/pending_settlements.py), instead of a 500 for a request
the provider answered and nobody recorded. A save refused fewer times in a row still lands."""

import json
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError, OperationalError

from adapters.bootstrap import in_memory_ledger
from adapters.http.errors import STORE_UNAVAILABLE, response_for, status_of
from application.accounts import Accounts
from application.ledger import MAX_SAVE_ATTEMPTS, AccountContended, Ledger
from application.pending_settlements import PendingSettlements
from domain.account import Account


def refusing(ledger: Ledger, times: int, monkeypatch: pytest.MonkeyPatch, *, raced: bool = True) -> list[int]:
    """Make the next ``times`` saves fail as a save another writer beat does (``raced``: that
    writer's grant of 1 lands first), or as one refused for a record that exists (the account
    unmoved); count them."""
    save = ledger.save
    refused: list[int] = []

    def lose(*objs: Any, **kwargs: Any) -> Any:
        if len(refused) < times:
            refused.append(1)
            if raced:
                other = ledger.get_account(objs[0].id)
                other.grant_credits(1, "the other writer", None)
                save(other)
            for obj in objs:
                obj.collect_events()  # a refused save has taken the pending events, as the store's does
            raise IntegrityError("duplicate key value violates unique constraint")
        return save(*objs, **kwargs)

    monkeypatch.setattr(ledger, "save", lose)
    return refused


def grant(ledger: Ledger, account_id: Any) -> bool:
    def change(account: Account) -> list[Any]:
        account.grant_credits(7, "top-up", None)
        return []

    return ledger.change(lambda: ledger.get_account(account_id), change)


@pytest.fixture
def ledger() -> Ledger:
    ledger = in_memory_ledger()
    ledger.initialise()
    return ledger


def test_a_change_that_loses_every_save_is_account_contended_and_moves_nothing(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = Accounts(ledger).create_account("acme")
    refused = refusing(ledger, MAX_SAVE_ATTEMPTS, monkeypatch)
    with pytest.raises(AccountContended) as raised:
        grant(ledger, account.id)
    assert len(refused) == MAX_SAVE_ATTEMPTS
    assert isinstance(raised.value.__cause__, IntegrityError)
    assert ledger.get_account(account.id).balance == MAX_SAVE_ATTEMPTS  # the other writer's grants alone


def test_a_change_refused_with_the_account_unmoved_stays_an_integrity_error(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = Accounts(ledger).create_account("acme")
    refusing(ledger, MAX_SAVE_ATTEMPTS, monkeypatch, raced=False)
    with pytest.raises(IntegrityError) as raised:
        grant(ledger, account.id)
    assert not isinstance(raised.value, AccountContended)  # what it saves exists: no race to wait out
    assert ledger.get_account(account.id).balance == 0


def test_a_change_refused_fewer_times_than_the_attempts_lands_once(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = Accounts(ledger).create_account("acme")
    refusing(ledger, MAX_SAVE_ATTEMPTS - 1, monkeypatch)
    assert grant(ledger, account.id)
    assert ledger.get_account(account.id).balance == MAX_SAVE_ATTEMPTS - 1 + 7


def test_account_contended_is_a_transient_store_failure_answered_503_store_unavailable() -> None:
    error = AccountContended("20 saves in a row refused")
    assert isinstance(error, OperationalError)
    assert PendingSettlements.transient(error)  # a settlement or void is kept and retried
    assert status_of(error) == 503
    body = json.loads(bytes(response_for(error).body))
    assert body["error"]["code"] == STORE_UNAVAILABLE and body["error"]["type"] == "server_error"
