"""Account holds and lots are value objects (``Hold``, ``Lot``), and an account snapshot keeps
the shape snapshots always had: one written before they were value objects loads as value
objects, and one written now is what an earlier version reads (issue 14, item 2)."""

from dataclasses import FrozenInstanceError
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import DatetimeAsISO, DecimalAsStr, JSONTranscoder, Mapper, UUIDAsHex

from domain import ids
from domain.account import Account, Hold, Lot

NOW = datetime(2026, 12, 1, tzinfo=UTC)
REQUEST = UUID(int=1)
KEY = UUID(int=9)
SOONER, LATER = 2, 3  # the grants' identities: their CreditGranted versions

# The state of an account snapshot as the version before value objects stored it (domain/account.py
# at 6d40aed): holds and lots plain dicts, int-keyed dicts as [key, value] pairs.
OLD_STATE: dict[str, Any] = {
    "_created_on": NOW,
    "_modified_on": NOW + timedelta(days=2),
    "name": "acme",
    "balance": 140,
    "caps": {"account": {"day": 1000, "month": None}},
    "spent": {},
    "holds": {
        REQUEST.hex: {
            "amount": 140,
            "expires_at": NOW + timedelta(minutes=15),
            "api_key": KEY.hex,
            "day": "2026-12-01",
            "month": "2026-12",
        }
    },
    "lots": {"__int_keys__": [[LATER, {"expires_at": NOW + timedelta(days=5), "remaining": 30}]]},
    "kept": {REQUEST.hex: {"__int_keys__": [[SOONER, 60]]}},
}


def assign(value: Any, name: str, new: Any) -> None:
    setattr(value, name, new)


def the_same_history() -> Account:
    """The history OLD_STATE is the snapshot of."""
    account = Account("acme")
    account.grant_credits(100, "promo", expires_at=NOW + timedelta(days=1), now=NOW)
    account.grant_credits(30, "promo 2", expires_at=NOW + timedelta(days=5), now=NOW)
    account.grant_credits(50, "paid")
    account.set_spend_caps("account", 1000, None)
    account.place_hold(REQUEST, 140, NOW + timedelta(minutes=15), api_key_id=KEY, now=NOW)
    account.expire_grants(NOW + timedelta(days=2))  # the sooner grant: 40 expires, 60 kept by the hold
    return account


def stored_and_loaded(snapshot: Account.Snapshot) -> Account:
    """Through the store's JSON mapping (eventsourcing's default transcodings) and back."""
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    mapper: Mapper[UUID] = Mapper(transcoder=transcoder)
    loaded = mapper.to_domain_event(mapper.to_stored_event(snapshot))
    assert isinstance(loaded, Account.Snapshot)
    account = loaded.mutate(None)
    assert isinstance(account, Account)
    return account


def test_a_snapshot_written_before_holds_and_lots_were_value_objects_loads_them_as_value_objects() -> None:
    old = Account.Snapshot(
        originator_id=ids.account_id("acme"),
        originator_version=7,
        timestamp=NOW + timedelta(days=2),
        topic="domain.account:Account",
        state=OLD_STATE,
    )
    account = stored_and_loaded(old)
    assert account.holds == {
        REQUEST.hex: Hold(140, NOW + timedelta(minutes=15), api_key=KEY.hex, day="2026-12-01", month="2026-12")
    }
    assert account.lots == {LATER: Lot(expires_at=NOW + timedelta(days=5), remaining=30)}
    assert account.kept == {REQUEST.hex: {SOONER: 60}}
    assert (account.version, account.balance, account.held, account.available, account.expiring) == (7, 140, 140, 0, 30)
    assert account.next_expiry == NOW + timedelta(days=5)
    # it goes on as the account it was: the hold spends its kept credit first, then the lot
    assert account.settle_hold(REQUEST, 80) == 80
    assert (account.balance, account.held, account.kept, account.lots) == (
        60,
        0,
        {},
        {LATER: Lot(expires_at=NOW + timedelta(days=5), remaining=10)},
    )


def test_a_snapshot_taken_now_has_the_shape_the_earlier_version_stored() -> None:
    state = dict(Account.Snapshot.take(the_same_history()).state)
    for timestamps in ("_created_on", "_modified_on"):
        state.pop(timestamps)
    expected = {key: value for key, value in OLD_STATE.items() if key not in ("_created_on", "_modified_on")}
    assert state == expected


def test_a_snapshot_taken_now_loads_back_into_an_equal_account() -> None:
    account = the_same_history()
    loaded = stored_and_loaded(Account.Snapshot.take(account))
    assert (loaded.holds, loaded.lots, loaded.kept, loaded.balance, loaded.version) == (
        account.holds,
        account.lots,
        account.kept,
        account.balance,
        account.version,
    )


def test_holds_and_lots_are_replaced_on_change_never_mutated() -> None:
    account = the_same_history()
    lot, hold = account.lots[LATER], account.holds[REQUEST.hex]
    with pytest.raises(FrozenInstanceError):
        assign(lot, "remaining", 0)
    account.settle_hold(REQUEST, 80)
    assert lot == Lot(expires_at=NOW + timedelta(days=5), remaining=30)  # the object read before is unchanged
    assert account.lots[LATER] == Lot(expires_at=NOW + timedelta(days=5), remaining=10)
    assert hold.amount == 140 and REQUEST.hex not in account.holds
