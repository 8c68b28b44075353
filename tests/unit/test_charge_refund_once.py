"""A request's charge is refunded at most once, by identity (domain/account.py
``refund_charge``): the refund's receipt is keyed by (account, request), so a second refund of
the same request collides with the first in the store and moves nothing, while the account
keeps no list of refunded requests."""

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest
from eventsourcing.application import Application
from eventsourcing.persistence import IntegrityError

from domain.account import REFUND_KIND, Account, MovementReceipt

NOW = datetime(2026, 12, 7, tzinfo=UTC)


def charged_account(app: Application[UUID]) -> tuple[Account, UUID, int]:
    account = Account(name="acme")
    account.grant_credits(10**9, "top-up", None)
    request_id = uuid4()
    account.place_hold(request_id, 5_000, NOW + timedelta(minutes=15), now=NOW)
    charge = account.settle_hold(request_id, 3_217)
    app.save(account)
    return account, request_id, charge


def test_a_refund_returns_its_receipt_keyed_by_the_account_and_the_request() -> None:
    app: Application[UUID] = Application()
    account, request_id, charge = charged_account(app)
    receipt = account.refund_charge(request_id, charge, "answered 503 store_unavailable")
    assert receipt.id == MovementReceipt.create_id(account.id, REFUND_KIND, request_id.hex)
    assert (receipt.amount, receipt.terms) == (charge, {"reason": "answered 503 store_unavailable"})
    app.save(account, receipt)
    assert app.repository.get(account.id).balance == 10**9  # charge and refund net zero


def test_a_second_refund_of_the_same_request_is_refused_by_the_store_and_moves_nothing() -> None:
    app: Application[UUID] = Application()
    account, request_id, charge = charged_account(app)
    app.save(account, account.refund_charge(request_id, charge, "first"))

    again: Account = app.repository.get(account.id)
    second = again.refund_charge(request_id, charge, "second")  # a copy that did not see the first's receipt
    with pytest.raises(IntegrityError):
        app.save(again, second)
    stored: Account = app.repository.get(account.id)
    assert stored.balance == 10**9
    refunds = [e for e in app.events.get(account.id) if isinstance(e, Account.ChargeRefunded)]
    assert [(e.amount, e.reason) for e in refunds] == [(charge, "first")]


def test_refunds_of_different_requests_each_have_their_own_receipt() -> None:
    app: Application[UUID] = Application()
    account, first, charge = charged_account(app)
    other = uuid4()
    account.place_hold(other, 5_000, NOW + timedelta(minutes=15), now=NOW)
    charge_other = account.settle_hold(other, 1_000)
    app.save(account, account.refund_charge(first, charge, "a"), account.refund_charge(other, charge_other, "b"))
    assert app.repository.get(account.id).balance == 10**9
