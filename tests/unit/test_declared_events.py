"""The aggregates' events are declared classes (``Account.CreditGranted``), and declaring
them changed nothing stored:

- each declared class's fields are its decorated method's parameters (``__init__``'s for
  a "created" event), in order, with the same defaults;
- every topic in the store an earlier commit wrote (tests/fixtures/store_main_6d40aed/)
  resolves to today's class of that name, and each stored state has exactly the
  declared fields of its class, in their order, but for the fields added since
  (``ADDED_SINCE_FIXTURE``), which it lacks and which have a default; older stores hold a
  prefix of them, and what they lack has a default;
- what the commands store today is, key for key and in order, what the events declared
  by ``@event("Name")`` stored;
- an event stored before a field existed loads, and reads that field's default.
"""

from __future__ import annotations

import inspect
import json
import shutil
import sqlite3
from collections.abc import Sequence
from dataclasses import MISSING, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import pytest
from eventsourcing.domain import Aggregate, DomainEventProtocol, decorated_funcs
from eventsourcing.persistence import DatetimeAsISO, JSONTranscoder, Mapper, StoredEvent, UUIDAsHex
from eventsourcing.utils import get_topic, resolve_topic

from domain.account import Account, MovementReceipt
from domain.api_key import ApiKey
from domain.catalog import Catalog
from domain.deployment import Deployment
from domain.export_log import ExportLog
from domain.portal import PortalAccess, PortalLink
from domain.price_book import PriceBook
from domain.pricing import ModelPrice
from domain.provider import Provider
from domain.rate_limits import AccountRateLimits
from domain.replay_log import ReplayLog
from domain.request_record import RequestRecord
from domain.webhook import WebhookRegistry
from projections.balances import fold_balances

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FIXTURE_STORE = FIXTURES / "store_main_6d40aed" / "store" / "tallyhub.sqlite"
OLDER_STORES = [  # written before receipts kept their terms: Recorded has no "terms"
    FIXTURES / "old_format_exports" / "store" / "tallyhub.sqlite",
    FIXTURES / "store_before_secrets_table" / "tallyhub.sqlite",
]
# Fields declared after the fixture store was written: it lacks them, and they have a default.
ADDED_SINCE_FIXTURE = {"domain.account:Account.ChargeRefunded": ["api_key", "day", "month"]}  # issue 20
# Declared by the aggregate's event class itself, not by its method: never in the fields compared.
BASE_FIELDS = {"originator_id", "originator_version", "timestamp", "originator_topic"}
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def mapper() -> Mapper[UUID]:
    transcoder = JSONTranscoder()
    transcoder.register(UUIDAsHex())
    transcoder.register(DatetimeAsISO())
    return Mapper(transcoder=transcoder)


def declared_fields(cls: type) -> list[str]:
    return [f.name for f in fields(cls) if f.name not in BASE_FIELDS]


def stored_events(store: Path, tmp_path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(topic, state) of every stored event of ``store``, read from a copy (SQLite leaves
    -shm files next to a database it opened)."""
    copy = tmp_path / store.name
    shutil.copyfile(store, copy)
    with sqlite3.connect(copy) as db:
        rows = db.execute("SELECT topic, state FROM stored_events ORDER BY rowid").fetchall()
    return [(topic, json.loads(state)) for topic, state in rows]


@pytest.fixture(scope="module")
def fixture_events(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, dict[str, Any]]]:
    return stored_events(FIXTURE_STORE, tmp_path_factory.mktemp("declared_events"))


def test_every_topic_of_the_fixture_store_resolves_to_a_declared_event_class(
    fixture_events: list[tuple[str, dict[str, Any]]],
) -> None:
    topics = {topic for topic, _ in fixture_events}
    declared = {
        Account.Created,
        Account.CreditGranted,
        Account.GrantExpired,
        Account.Adjusted,
        Account.ChargeRefunded,
        Account.HoldPlaced,
        Account.SpendCapsSet,
        Account.HoldSettled,
        Account.HoldReleased,
        MovementReceipt.Recorded,
        MovementReceipt.Refunded,
        PriceBook.Opened,
        PriceBook.VersionPublished,
    }
    assert {get_topic(cls) for cls in declared} <= topics  # the fixture holds one of each
    for topic in topics:
        cls = resolve_topic(topic)
        assert isinstance(cls, type) and issubclass(cls, Aggregate.Event), topic
        assert get_topic(cls) == topic


def test_each_stored_state_of_the_fixture_has_the_declared_fields_in_their_order(
    fixture_events: list[tuple[str, dict[str, Any]]],
) -> None:
    checked = 0
    for topic, state in fixture_events:
        cls = resolve_topic(topic)
        added = ADDED_SINCE_FIXTURE.get(topic, [])
        declared = declared_fields(cls)
        assert [key for key in state if key not in BASE_FIELDS] + added == declared, topic
        defaults = {f.name: f.default for f in fields(cls)}
        assert all(defaults[name] is not MISSING for name in added), topic
        checked += 1
    assert checked == len(fixture_events) > 100


@pytest.mark.parametrize("store", OLDER_STORES, ids=["old_format_exports", "store_before_secrets_table"])
def test_an_older_store_holds_the_declared_fields_in_order_and_what_it_lacks_has_a_default(
    store: Path, tmp_path: Path
) -> None:
    lacking = set()
    for topic, state in stored_events(store, tmp_path):
        cls = resolve_topic(topic)
        assert issubclass(cls, Aggregate.Event) and get_topic(cls) == topic
        keys = [key for key in state if key not in BASE_FIELDS]
        declared = {f.name: f for f in fields(cls) if f.name not in BASE_FIELDS}
        assert keys == list(declared)[: len(keys)], topic  # stored in the declared order
        for name in list(declared)[len(keys) :]:  # fields added since, read as their default
            assert declared[name].default is not MISSING, (topic, name)
            lacking.add((topic, name))
    assert (get_topic(Deployment.Initialised), "pepper_ref") in lacking
    if store.parts[-3] == "old_format_exports":
        assert (get_topic(MovementReceipt.Recorded), "terms") in lacking


AGGREGATES: list[type[Aggregate]] = [
    Account,
    MovementReceipt,
    ApiKey,
    AccountRateLimits,
    Catalog,
    Deployment,
    ExportLog,
    PriceBook,
    Provider,
    ReplayLog,
    RequestRecord,
    WebhookRegistry,
    PortalLink,
    PortalAccess,
]


def test_each_declared_event_has_its_methods_parameters_as_fields_in_order_with_their_defaults() -> None:
    """What ``@event(Class)`` needs (the method's parameters are the class's fields), and what
    keeps stored states as they were: the order is the stored order, a default is what an
    event stored before its field existed reads, in the method and in every reader."""
    checked = 0
    for aggregate in AGGREGATES:
        events = [c for c in vars(aggregate).values() if isinstance(c, type) and issubclass(c, Aggregate.Event)]
        created = [c for c in events if issubclass(c, Aggregate.Created)]
        for cls in events:
            if cls is aggregate.Event or (cls.__name__ == "Created" and len(created) > 1):
                continue  # the library's bases: "Created" is unused when the created event has another name
            init = cast(Any, aggregate).__init__  # the function @event decorated, if it did
            method = init if issubclass(cls, Aggregate.Created) else decorated_funcs[cls]
            params = [p for p in inspect.signature(method).parameters.values() if p.name != "self"]
            declared = [f for f in fields(cls) if f.name not in BASE_FIELDS]
            assert [f.name for f in declared] == [p.name for p in params], cls.__qualname__
            for f, p in zip(declared, params, strict=True):
                assert f.default == (MISSING if p.default is p.empty else p.default), (cls.__qualname__, f.name)
            checked += 1
    # 45, then Provider.UpstreamPolicySet (issue 16), Account.AlertThresholdsSet and WebhookRegistry's 3 (issue 18),
    # Account.SelfServiceSet, PortalLink's 2, PortalAccess's 2 and Provider.CredentialWeightChanged (issue 19)
    assert checked == 56


def stored(events: Sequence[DomainEventProtocol[Any]]) -> list[tuple[str, list[tuple[str, Any]]]]:
    """Each event's topic and stored state without its time, as (key, value) pairs in the stored order."""
    out = []
    for event in events:
        stored_event = mapper().to_stored_event(event)
        state = json.loads(stored_event.state)
        del state["timestamp"]
        out.append((stored_event.topic, list(state.items())))
    return out


def in_order(expected: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, list[tuple[str, Any]]]]:
    return [(topic, list(state.items())) for topic, state in expected]


def uuid_of(n: int) -> UUID:
    return UUID(int=n)


def uuid_json(value: UUID) -> dict[str, str]:
    return {"_type_": "uuid_hex", "_data_": value.hex}


def uuid(n: int) -> dict[str, str]:
    return uuid_json(uuid_of(n))


def at(value: datetime) -> dict[str, str]:
    return {"_type_": "datetime_iso", "_data_": value.isoformat()}


def test_the_commands_store_what_the_events_named_by_string_stored() -> None:
    """The stored states below were printed by the commit before the events were declared."""
    account = Account("acme")
    account.grant_credits(1000, "r", "k1", expires_at=NOW + timedelta(days=1), now=NOW)
    account.grant_credits(500, "r2")
    account.adjust(-3, "fix", "k2")
    account.set_spend_caps("account", 10**6, None)
    account.place_hold(uuid_of(1), 700, NOW + timedelta(hours=1), api_key_id=uuid_of(9), now=NOW)
    account.place_hold(uuid_of(2), 100, NOW + timedelta(hours=1), now=NOW)
    account.expire_grants(NOW + timedelta(days=2))
    account.settle_hold(uuid_of(1), 50)
    account.release_hold(uuid_of(2), "upstream")
    account.refund_charge(uuid_of(1), 10, "sorry")
    account.charge_without_hold(uuid_of(3), 5)
    receipt = MovementReceipt(account.id, "payment", "p1", 100, {"reason": "x"})
    receipt.refund(10, "rf1")
    hour = at(NOW + timedelta(hours=1))
    assert stored([*account.collect_events(), *receipt.collect_events()]) == in_order(
        [
            ("domain.account:Account.Created", {"originator_topic": "domain.account:Account", "name": "acme"}),
            (
                "domain.account:Account.CreditGranted",
                {"amount": 1000, "reason": "r", "idempotency_key": "k1", "expires_at": at(NOW + timedelta(days=1))},
            ),
            (
                "domain.account:Account.CreditGranted",
                {"amount": 500, "reason": "r2", "idempotency_key": None, "expires_at": None},
            ),
            (
                "domain.account:Account.Adjusted",
                {"amount": -3, "requested": -3, "reason": "fix", "idempotency_key": "k2"},
            ),
            ("domain.account:Account.SpendCapsSet", {"scope": "account", "day": 1000000, "month": None}),
            (
                "domain.account:Account.HoldPlaced",
                {
                    "request_id": uuid(1),
                    "amount": 700,
                    "expires_at": hour,
                    "api_key": UUID(int=9).hex,
                    "day": "2026-01-01",
                    "month": "2026-01",
                },
            ),
            (
                "domain.account:Account.HoldPlaced",
                {
                    "request_id": uuid(2),
                    "amount": 100,
                    "expires_at": hour,
                    "api_key": None,
                    "day": "2026-01-01",
                    "month": "2026-01",
                },
            ),
            (
                "domain.account:Account.GrantExpired",
                {"grant": 2, "amount": 697, "kept_by_holds": {UUID(int=1).hex: 300}, "request_id": None},
            ),
            (
                "domain.account:Account.HoldSettled",
                {"request_id": uuid(1), "amount": 50, "uncollected": 0, "held": 700},
            ),
            (
                "domain.account:Account.GrantExpired",
                {"grant": 2, "amount": 250, "kept_by_holds": {}, "request_id": uuid(1)},
            ),
            ("domain.account:Account.HoldReleased", {"request_id": uuid(2), "amount": 100, "reason": "upstream"}),
            (  # the windows its charge counted in: none named (issue 20 added them, None by default)
                "domain.account:Account.ChargeRefunded",
                {"request_id": uuid(1), "amount": 10, "reason": "sorry", "api_key": None, "day": None, "month": None},
            ),
            ("domain.account:Account.HoldSettled", {"request_id": uuid(3), "amount": 5, "uncollected": 0, "held": 0}),
            (
                "domain.account:MovementReceipt.Recorded",
                {
                    "originator_topic": "domain.account:MovementReceipt",
                    "account_id": uuid_json(account.id),
                    "kind": "payment",
                    "idempotency_key": "p1",
                    "amount": 100,
                    "terms": {"reason": "x"},
                },
            ),
            ("domain.account:MovementReceipt.Refunded", {"amount": 10, "refund_id": "rf1"}),
        ]
    )


def test_a_price_book_version_is_stored_as_before() -> None:
    book = PriceBook()
    book.publish_version({"m": ModelPrice(input=1000, output=2000)}, NOW, now=NOW)
    prices = {"m": ModelPrice(input=1000, output=2000).to_dict()}
    assert stored(book.collect_events()) == in_order(
        [
            ("domain.price_book:PriceBook.Opened", {"originator_topic": "domain.price_book:PriceBook"}),
            (
                "domain.price_book:PriceBook.VersionPublished",
                {"version": 1, "prices": json.loads(json.dumps(prices)), "effective_at": at(NOW)},
            ),
        ]
    )


def test_an_event_stored_before_a_field_existed_reads_its_default_and_folds() -> None:
    """A grant from before grants expired, a hold from before spend caps: no ``expires_at``,
    no ``api_key``/``day``/``month`` in their state."""
    account = Account("old")
    account.grant_credits(1000, "r")
    account.place_hold(uuid_of(1), 300, NOW + timedelta(hours=1))
    missing = {
        get_topic(Account.CreditGranted): ("expires_at",),
        get_topic(Account.HoldPlaced): ("api_key", "day", "month"),
    }
    old = []
    for event in account.collect_events():
        new = mapper().to_stored_event(event)
        state = json.loads(new.state)
        for key in missing.get(new.topic, ()):
            del state[key]
        old.append(StoredEvent(new.originator_id, new.originator_version, new.topic, json.dumps(state).encode()))
    events = [mapper().to_domain_event(stored_event) for stored_event in old]
    granted, placed = events[1], events[2]
    assert isinstance(granted, Account.CreditGranted) and "expires_at" not in vars(granted)
    assert granted.expires_at is None
    assert isinstance(placed, Account.HoldPlaced) and "api_key" not in vars(placed)
    assert (placed.api_key, placed.day, placed.month) == (None, None, None)
    assert placed.expires_at == NOW + timedelta(hours=1)  # not removed: HoldPlaced always had it
    changes = fold_balances(events)
    assert changes.grants == {}  # a grant without expiry has no grant row
    assert changes.accounts[account.id].balance == 1000 and changes.accounts[account.id].held == 300
    loaded = None
    for loaded_event in events:
        assert isinstance(loaded_event, Account.Event)
        loaded = loaded_event.mutate(loaded)
    assert isinstance(loaded, Account)
    assert (loaded.balance, loaded.available, loaded.lots) == (1000, 700, {})
    assert loaded.holds[uuid_of(1).hex].api_key is None
