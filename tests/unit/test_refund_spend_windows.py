"""A refunded charge stops counting against the spend caps of the window it was charged in
(domain/account.py ``refund_charge``; the rule over any interleaving is
tests/property/test_spend_window_rules.py): the account's and the key's counts go down by the
refund, never below 0; a refund in a later window leaves that window's count alone; a refund
stored before refunds named their windows loads and moves no count, as it did. Over HTTP: a
request answered 503 ``store_unavailable`` whose settlement landed is voided (application/
voids.py), and the key's daily cap has room again for what it had been charged."""

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import UUID

import pytest
from eventsourcing.application import Application
from eventsourcing.persistence import Mapper
from fastapi.testclient import TestClient

from application.accounts import Accounts
from application.ledger import Ledger
from application.pending_settlements import PendingSettlements
from domain.account import Account
from domain.errors import SpendCapReached
from tests.unit.test_key_http import auth
from tests.unit.test_store_unavailable_void import CHAT, AmbiguousStore, gateway, until  # noqa: F401 (the fixture)

NOW = datetime(2026, 12, 7, 22, 0, tzinfo=UTC)
KEY = UUID(int=7)
TTL = timedelta(minutes=15)
STORED_FORM: Mapper[UUID] = Application().mapper  # the same JSON transcodings as the ledger's store


def charged(account: Account, request: int, cost: int, at: datetime = NOW) -> UUID:
    request_id = UUID(int=request)
    account.place_hold(request_id, cost, at + TTL, api_key_id=KEY, now=at)
    account.settle_hold(request_id, cost)
    return request_id


def funded() -> Account:
    account = Account(name="acme")
    account.grant_credits(10**12, "top-up")
    return account


def test_a_refund_lowers_the_account_and_key_counts_of_the_charges_day_and_month() -> None:
    account = funded()
    charged(account, 1, 300)
    refunded = charged(account, 2, 500)
    account.refund_charge(refunded, 500, "goodwill", api_key_id=KEY, started_at=NOW)
    for scope in ("account", KEY.hex):
        assert account.spent[scope] == {"day": ["2026-12-07", 300], "month": ["2026-12", 300]}


def test_a_refunded_charge_leaves_room_under_the_keys_daily_cap_again() -> None:
    account = funded()
    account.set_spend_caps(KEY.hex, day=1_000, month=None)
    refunded = charged(account, 1, 800)
    with pytest.raises(SpendCapReached):
        account.place_hold(UUID(int=2), 800, NOW + TTL, api_key_id=KEY, now=NOW)
    account.refund_charge(refunded, 800, "goodwill", api_key_id=KEY, started_at=NOW)
    account.place_hold(UUID(int=2), 800, NOW + TTL, api_key_id=KEY, now=NOW)  # admitted now


def test_a_refund_in_a_later_window_leaves_that_windows_count_alone() -> None:
    account = funded()
    yesterday = charged(account, 1, 400)
    tomorrow = NOW + timedelta(hours=3)  # 2026-12-08
    charged(account, 2, 250, at=tomorrow)
    account.refund_charge(yesterday, 400, "goodwill", api_key_id=KEY, started_at=NOW)
    assert account.spent["account"] == {"day": ["2026-12-08", 250], "month": ["2026-12", 250]}  # the month: both


def test_a_charge_of_the_day_before_settled_late_leaves_the_new_days_count_alone() -> None:
    account = funded()
    late = UUID(int=1)
    account.place_hold(late, 400, NOW + TTL, api_key_id=KEY, now=NOW + timedelta(hours=1, minutes=59))
    charged(account, 2, 250, at=NOW + timedelta(hours=2, minutes=1))  # after midnight
    account.settle_hold(late, 400)
    assert account.spent["account"] == {"day": ["2026-12-08", 250], "month": ["2026-12", 650]}


def test_a_refund_of_a_charge_counted_in_no_window_takes_a_count_to_0_at_most() -> None:
    account = funded()
    charged(account, 1, 100)
    late = UUID(int=2)  # charged after its hold was released: counted nowhere
    account.place_hold(late, 300, NOW + TTL, api_key_id=KEY, now=NOW)
    account.release_expired_holds(NOW + TTL)
    account.charge_without_hold(late, 300)
    account.refund_charge(late, 300, "goodwill", api_key_id=KEY, started_at=NOW)
    assert account.spent["account"] == {"day": ["2026-12-07", 0], "month": ["2026-12", 0]}


def test_a_refund_stored_before_refunds_named_their_windows_loads_and_moves_no_count() -> None:
    account = funded()
    refunded = charged(account, 1, 500)
    account.refund_charge(refunded, 500, "goodwill", api_key_id=KEY, started_at=NOW)
    events = [STORED_FORM.to_stored_event(event) for event in account.collect_events()]
    refund = events[-1]
    state = json.loads(refund.state)
    assert [state.pop(name) for name in ("api_key", "day", "month")] == [KEY.hex, "2026-12-07", "2026-12"]
    events[-1] = type(refund)(refund.originator_id, refund.originator_version, refund.topic, json.dumps(state).encode())
    loaded: Any = None
    for event in map(STORED_FORM.to_domain_event, events):
        loaded = cast(Any, event).mutate(loaded)
    assert isinstance(loaded, Account)
    assert (loaded.balance, loaded.spent["account"]["day"]) == (10**12, ["2026-12-07", 500])  # as before the change


def test_over_http_a_voided_request_leaves_room_under_its_keys_daily_cap(
    gateway: tuple[TestClient, Ledger, AmbiguousStore, PendingSettlements, str],  # noqa: F811
) -> None:
    client, ledger, store, pending, key = gateway
    chat = {"model": CHAT, "messages": [{"role": "user", "content": "hi"}]}
    store.fate = "unconfirmed"  # committed, then the connection "failed": answered 503, then voided
    voided = client.post("/v1/chat/completions", headers=auth(key), json=chat)
    assert voided.status_code == 503
    asyncio.run(until(lambda: pending.pending == 0 and pending.landed == 1))
    details = ledger.get_request_record(UUID(voided.headers["x-request-id"])).details
    assert details.charge > 0  # it landed, and was refunded
    # room for one more request's hold, not for that and the voided request's charge as well
    Accounts(ledger).set_spend_caps(
        "acme", day=details.hold + details.charge - 1, month=None, api_key_id=details.api_key_id
    )

    assert client.post("/v1/chat/completions", headers=auth(key), json=chat).status_code == 200
    refused = client.post("/v1/chat/completions", headers=auth(key), json=chat)  # the cap is on: this one counts
    assert (refused.status_code, refused.json()["error"]["code"]) == (429, "spend_cap_reached")
