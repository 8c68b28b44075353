"""Grants with ``expires_at``: expiring credit is spent first, soonest deadline first; a
deadline removes what is available at once and what open holds reserve when they close;
it is applied once, by the sweep or by the first hold placed after it; and the ledger,
the sweep and the admin API agree."""

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from fastapi.testclient import TestClient

from adapters.bootstrap import build_services
from adapters.http.app import create_app
from adapters.services import Services
from adapters.settings import Settings
from adapters.workers.hold_sweeper import sweep
from application.accounts import Accounts
from application.ledger import Ledger
from domain.account import Account
from domain.errors import InsufficientCredits, InvalidRequest
from tests.fakes.clock import FakeClock

T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def expiries(account: Account) -> list[tuple[int, int, dict[str, int], Any]]:
    return [
        (e.grant, e.amount, e.kept_by_holds, e.request_id)
        for e in account.pending_events
        if isinstance(e, Account.GrantExpired)
    ]


def test_the_unspent_rest_of_a_grant_expires_at_its_deadline_once() -> None:
    account = Account(name="acme")
    account.grant_credits(100, reason="paid")
    account.grant_credits(50, reason="promo", expires_at=T + HOUR, now=T)
    promo = account.version
    assert (account.expiring, account.next_expiry) == (50, T + HOUR)

    assert account.expire_grants(T + HOUR - timedelta(microseconds=1)) == []
    assert account.expire_grants(T + HOUR) == [promo]
    assert expiries(account) == [(promo, 50, {}, None)]
    assert (account.balance, account.available, account.expiring, account.next_expiry) == (100, 100, 0, None)

    events = len(account.pending_events)
    assert account.expire_grants(T + 2 * HOUR) == []
    assert len(account.pending_events) == events


def test_charges_and_debits_spend_the_soonest_expiring_credit_first() -> None:
    account = Account(name="acme")
    account.grant_credits(100, reason="paid")
    account.grant_credits(50, reason="later", expires_at=T + 2 * HOUR, now=T)
    later = account.version
    account.grant_credits(30, reason="sooner", expires_at=T + HOUR, now=T)
    sooner = account.version
    request = uuid4()
    account.place_hold(request, 60, T + HOUR, now=T)
    assert account.settle_hold(request, 40) == 40  # all 30 of "sooner", then 10 of "later"
    assert {grant: lot.remaining for grant, lot in account.lots.items()} == {later: 40, sooner: 0}
    assert account.adjust(-45, reason="chargeback") == -45  # the other 40 of "later", then 5 that never expires
    assert {grant: lot.remaining for grant, lot in account.lots.items()} == {later: 0, sooner: 0}
    assert account.balance == 95

    assert account.expire_grants(T + 3 * HOUR) == [sooner, later]
    assert expiries(account) == [(sooner, 0, {}, None), (later, 0, {}, None)]  # nothing was left to expire
    assert account.balance == 95


def test_credit_that_holds_reserve_at_the_deadline_is_kept_by_them_and_expires_when_they_close() -> None:
    account = Account(name="acme")
    account.grant_credits(100, reason="paid")
    account.grant_credits(50, reason="promo", expires_at=T + HOUR, now=T)
    promo = account.version
    settled, released = uuid4(), uuid4()
    account.place_hold(settled, 90, T + 2 * HOUR, now=T)
    account.place_hold(released, 50, T + 2 * HOUR, now=T)  # 140 of 150 held: 10 available

    account.expire_grants(T + HOUR)
    assert expiries(account) == [(promo, 10, {settled.hex: 40}, None)]  # only what is available expires now
    assert (account.balance, account.available) == (140, 0)
    assert account.kept == {settled.hex: {promo: 40}}

    assert account.settle_hold(settled, 25) == 25  # spent from what it kept; the other 15 expire
    assert expiries(account)[-1] == (promo, 15, {}, settled)
    assert (account.balance, account.available, account.kept) == (100, 50, {})

    account.release_hold(released, reason="upstream failed")
    assert (account.balance, account.available) == (100, 100)  # the credit that never expires is all left


def test_a_released_hold_expires_all_it_kept() -> None:
    account = Account(name="acme")
    account.grant_credits(50, reason="promo", expires_at=T + HOUR, now=T)
    promo = account.version
    request = uuid4()
    account.place_hold(request, 50, T + 2 * HOUR, now=T)
    account.expire_grants(T + HOUR)
    assert (account.balance, account.available, account.kept) == (50, 0, {request.hex: {promo: 50}})
    account.release_hold(request, reason="upstream failed")
    assert expiries(account) == [(promo, 0, {request.hex: 50}, None), (promo, 50, {}, request)]
    assert (account.balance, account.available, account.kept) == (0, 0, {})


def test_a_hold_placed_after_a_deadline_never_reserves_the_credit_that_expired_before_the_sweep() -> None:
    account = Account(name="acme")
    account.grant_credits(10, reason="paid")
    account.grant_credits(50, reason="promo", expires_at=T + HOUR, now=T)
    promo = account.version

    events = len(account.pending_events)
    with pytest.raises(InsufficientCredits) as refused:
        account.place_hold(uuid4(), 11, T + 2 * HOUR, now=T + HOUR)
    assert refused.value.available == 10
    assert len(account.pending_events) == events  # a refused hold changes nothing

    request = uuid4()
    account.place_hold(request, 10, T + 2 * HOUR, now=T + HOUR)
    assert [type(e).__name__ for e in account.pending_events[events:]] == ["GrantExpired", "HoldPlaced"]
    assert expiries(account) == [(promo, 50, {}, None)] and request.hex not in account.kept


@pytest.mark.parametrize("expires_at", [T, T - HOUR, datetime(2027, 1, 1)])
def test_a_grant_expires_in_the_future_at_a_time_with_a_zone(expires_at: datetime) -> None:
    account = Account(name="acme")
    with pytest.raises(InvalidRequest) as refused:
        account.grant_credits(1, reason="promo", expires_at=expires_at, now=T)
    assert refused.value.param == "expires_at"


def test_expiry_survives_the_event_store_round_trip(ledger: Ledger, clock: FakeClock) -> None:
    Accounts(ledger).create_account("acme")
    Accounts(ledger).grant_credits("acme", 50, "promo", expires_at=clock.now() + HOUR)
    Accounts(ledger).grant_credits("acme", 20, "paid")
    request = uuid4()
    ledger.change_account(
        ledger.get_account("acme").id,
        lambda a: a.place_hold(request, 60, clock.now() + 2 * HOUR, now=clock.now()) or [],
    )
    clock.advance(hours=1)
    assert len(Accounts(ledger).expire_grants("acme")) == 1
    account = ledger.get_account("acme")  # rebuilt from the stored events
    assert (account.balance, account.available, account.lots) == (60, 0, {})
    assert account.kept == {request.hex: {2: 40}}
    assert Accounts(ledger).expire_grants("acme") == []


def test_the_ledger_refuses_a_past_deadline_but_answers_a_repeated_key_as_already_credited(
    ledger: Ledger, clock: FakeClock
) -> None:
    Accounts(ledger).create_account("acme")
    with pytest.raises(InvalidRequest):
        Accounts(ledger).grant_credits("acme", 5, "promo", "k1", expires_at=clock.now())
    first = Accounts(ledger).grant_credits("acme", 5, "promo", "k1", expires_at=clock.now() + HOUR)
    clock.advance(hours=2)
    again = Accounts(ledger).grant_credits("acme", 5, "promo", "k1", expires_at=clock.now() - HOUR)
    assert (first.credited, again.credited) == (True, False)
    assert ledger.get_account("acme").balance == 5


# --- the sweep and the admin API, in process ----------------------------------------


@pytest.fixture
def services(ledger: Ledger) -> Services:
    return build_services(Settings(admin_key="tha_test_admin_key"), ledger=ledger)


@pytest.fixture
def admin(services: Services) -> TestClient:
    """The gateway's app without its lifespan (no background sweeps): the test sweeps."""
    client = TestClient(create_app(services, run_projections=False))
    client.headers["authorization"] = "Bearer tha_test_admin_key"
    return client


def test_the_sweep_expires_due_grants_once_after_releasing_expired_holds(services: Services, clock: FakeClock) -> None:
    ledger = services.ledger
    Accounts(ledger).create_account("acme")
    Accounts(ledger).create_account("other")
    Accounts(ledger).grant_credits("acme", 50, "promo", expires_at=clock.now() + HOUR)
    Accounts(ledger).grant_credits("other", 7, "promo", expires_at=clock.now() + 3 * HOUR)
    request = uuid4()
    ledger.change_account(
        ledger.get_account("acme").id, lambda a: a.place_hold(request, 50, clock.now() + timedelta(minutes=15)) or []
    )
    assert sweep(services) == {"released": 0, "expired_grants": 0}

    clock.advance(hours=1)
    assert sweep(services) == {"released": 1, "expired_grants": 1}  # the hold first, so all 50 expire now
    assert sweep(services) == {"released": 0, "expired_grants": 0}
    account = ledger.get_account("acme")
    assert (account.balance, account.kept) == (0, {})
    services.read_models.runner.catch_up()
    row = services.read_models.balances.get_balance(account.id)
    assert row is not None and (row.balance, row.expired_total) == (0, 50)
    assert ledger.get_account("other").balance == 7


def test_the_admin_api_grants_with_expires_at_and_refuses_a_past_one(
    admin: TestClient, services: Services, clock: FakeClock
) -> None:
    services.accounts.create_account("acme")
    past = admin.post(
        "/admin/v1/accounts/acme/grants", json={"amount": "1", "expires_at": (clock.now() - HOUR).isoformat()}
    )
    assert past.status_code == 400, past.text
    assert set(past.json()["error"]) == {"message", "type", "param", "code"}
    assert past.json()["error"]["param"] == "expires_at"

    deadline = clock.now() + HOUR
    no_zone = deadline.replace(tzinfo=None).isoformat()
    granted = admin.post(
        "/admin/v1/accounts/acme/grants", json={"amount": "2.5", "reason": "promo", "expires_at": no_zone}
    )
    assert granted.status_code == 201, granted.text
    assert granted.json()["expires_at"] == deadline.isoformat()  # no zone named: UTC
    admin.post("/admin/v1/accounts/acme/grants", json={"amount": "1"})
    balance = admin.get("/admin/v1/accounts/acme/balance").json()
    assert (balance["balance"], balance["expiring"], balance["next_expiry"]) == (
        3_500_000_000,
        2_500_000_000,
        deadline.isoformat(),
    )

    clock.advance(hours=1)
    assert admin.post("/admin/v1/holds/sweep").json() == {"released": 0, "expired_grants": 1}
    balance = admin.get("/admin/v1/accounts/acme/balance").json()
    assert (balance["balance"], balance["expired_total"], balance["expired_total_credits"]) == (
        1_000_000_000,
        2_500_000_000,
        "2.500000000",
    )
    assert (balance["expiring"], balance["next_expiry"]) == (0, None)
