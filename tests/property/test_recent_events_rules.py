"""The projections of a process fed from its recent events (projections/recent_events.py)
are exactly the projections fed from the store: for any sequence of grants, holds,
settlements, releases and request records, saved by this process or by a second one on the
same SQLite store, refused saves included, each read model built from events this process
kept holds the same content as one built from events decoded from the store, and each kept
event equals, type for type down to its nested values, the event decoded from its stored
state. A map fed before the commit, or under a stale id, is caught by the same comparison."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import IntegrityError, Notification, Recording
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.bootstrap import _project_from_memory, build_read_models
from adapters.crypto.aes_gcm import AesGcmKeyVault
from adapters.crypto.key_digest import HmacApiKeyScheme
from adapters.settings import parse_database_url
from application.accounts import Accounts
from application.ledger import Ledger
from domain.errors import TallyhubError
from domain.request_record import RequestDetails, RequestRecord
from projections.recent_events import RecentEvents
from tests.property.test_record_facts import billed_details

PROCESSES = ("this", "other")
STEPS = st.lists(
    st.tuples(
        st.sampled_from(("grant", "hold", "settle", "release", "record", "record again", "pass")),
        st.sampled_from(PROCESSES),
        st.integers(0, 5_000),
    ),
    max_size=25,
)


class World:
    """Two ledgers (two processes) on one SQLite store; ``this`` one's read models come in
    two copies: ``fed`` takes the events ``this`` saves from memory, ``decoded`` (no map)
    decodes every event from the store."""

    def __init__(self, directory: str, feed: Callable[[Ledger, Any], None] = _project_from_memory) -> None:
        env = parse_database_url(None, Path(directory)).eventsourcing_env(create_tables=False)
        master = os.urandom(32)
        self.this = Ledger(
            {**env, "CREATE_TABLE": "y"}, vault=AesGcmKeyVault(master), key_scheme_factory=HmacApiKeyScheme
        )
        self.this.initialise()
        self.other = Ledger(env, vault=AesGcmKeyVault(master), key_scheme_factory=HmacApiKeyScheme)
        self.other.load_deployment()
        self.fed = build_read_models(None, self.this)
        self.decoded = build_read_models(None, self.this)
        feed(self.this, self.fed)
        self.recent: RecentEvents = self.fed.runner.recent
        self.account = Accounts(self.this).create_account("acme").id
        self.holds: list[UUID] = []
        self.records: list[UUID] = []

    def ledger(self, process: str) -> Ledger:
        return self.this if process == "this" else self.other

    def step(self, command: str, process: str, amount: int, details: RequestDetails) -> None:
        ledger = self.ledger(process)
        try:
            if command == "grant":
                Accounts(ledger).grant_credits("acme", amount + 1)
            elif command == "hold":
                hold = uuid4()
                expires = ledger.clock.now() + timedelta(minutes=5)
                ledger.change_account(self.account, _holding(hold, amount, expires))
                self.holds.append(hold)
            elif command in ("settle", "release") and self.holds:
                hold = self.holds.pop(amount % len(self.holds))
                ledger.change_account(self.account, self._close(command, hold, amount, details))
                self.records.append(hold)
            elif command == "record":
                self._record(ledger, uuid4(), details)
            elif command == "record again" and self.records:  # refused: the record exists
                with pytest.raises(IntegrityError):
                    self._record(ledger, self.records[amount % len(self.records)], details)
            elif command == "pass":
                for read_models in (self.fed, self.decoded):
                    read_models.runner.catch_up(defer=amount % 2 == 0)
        except TallyhubError:
            pass  # a 402, a hold already closed: refused with nothing saved, as billing meets it

    def _record(self, ledger: Ledger, request_id: UUID, details: RequestDetails) -> None:
        ledger.save(RequestRecord.failed(request_id, dataclasses.replace(details, outcome="failed", usage=None)))
        self.records.append(request_id)

    def _close(self, command: str, hold: UUID, amount: int, details: RequestDetails) -> Callable[[Any], Any]:
        record = dataclasses.replace(details, account_id=self.account.hex)

        def close(account: Any) -> list[RequestRecord]:
            if command == "release":
                account.release_hold(hold, "upstream_error")
                return [RequestRecord.failed(hold, dataclasses.replace(record, outcome="failed", usage=None))]
            account.settle_hold(hold, amount)
            return [RequestRecord.completed(hold, record)] if record.outcome == "completed" else []

        return close

    def settle(self) -> None:
        for read_models in (self.fed, self.decoded):
            read_models.runner.catch_up()

    def close(self) -> None:
        self.this.close()
        self.other.close()


def _holding(hold: UUID, amount: int, expires: datetime) -> Callable[[Any], list[Any]]:
    def place(account: Any) -> list[Any]:
        account.place_hold(hold, amount, expires)
        return []

    return place


@contextmanager
def world(feed: Callable[[Ledger, Any], None] = _project_from_memory) -> Iterator[World]:
    with tempfile.TemporaryDirectory() as directory:
        built = World(directory, feed)
        try:
            yield built
        finally:
            built.close()


def views(read_models: Any) -> dict[str, Any]:
    """Every read model's content: each in-memory view's state, as its projection left it."""
    return {name: strict(_state(projection)) for name, projection in sorted(read_models.runner.projections.items())}


def _state(projection: Any) -> Any:
    return getattr(projection, "view", projection)


_PLUMBING = ("RLock", "lock", "InMemoryStore", "ProjectionRunner", "type", "function", "method")


def strict(value: Any) -> Any:
    """``value`` with each part's type beside it, so ``==`` tells a tuple from a list, an int
    from a float or a bool, a naive time from an aware one."""
    if isinstance(value, dict):
        return ("dict", sorted(((repr(strict(k)), strict(v)) for k, v in value.items()), key=lambda kv: kv[0]))
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [strict(v) for v in value]
        return (type(value).__name__, sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items)
    if isinstance(value, datetime):
        return ("datetime", value.isoformat(), repr(value.tzinfo))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__qualname__, strict({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}))
    if hasattr(value, "__dict__") and not isinstance(value, type):  # a view or its parts: its data
        data = {k: v for k, v in vars(value).items() if type(v).__name__ not in _PLUMBING}
        return (type(value).__qualname__, strict(data))
    if isinstance(value, (str, int, float, bool, bytes, Decimal, UUID)) or value is None:
        return (type(value).__name__, value)
    return (type(value).__qualname__, repr(value))


def check_kept_events_are_the_stored_ones(w: World) -> int:
    """Each event the map would hand out equals, strictly, its stored form decoded."""
    handed = 0
    for notification in w.this.recorder.select_notifications(None, 1_000_000):
        kept = w.recent.event(notification)
        if kept is not None:
            decoded = w.this.mapper.to_domain_event(notification)
            assert type(kept) is type(decoded)
            assert strict(vars(kept)) == strict(vars(decoded)), notification.topic
            handed += 1
    return handed


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=STEPS, details=billed_details())
def test_read_models_fed_from_recent_events_equal_those_fed_from_the_store(
    steps: list[tuple[str, str, int]], details: RequestDetails
) -> None:
    with world() as w:
        for command, process, amount in steps:
            w.step(command, process, amount, details)
        w.settle()
        assert views(w.fed) == views(w.decoded)
        check_kept_events_are_the_stored_ones(w)


def test_the_map_is_used_for_what_this_process_saves_and_only_that() -> None:
    """Not vacuous: the events ``this`` saves are handed out from memory, the other's are not."""
    with world() as w:
        w.step("grant", "this", 10, _details())
        w.step("grant", "other", 10, _details())
        mine, theirs = w.this.recorder.select_notifications(None, 1_000_000)[-2:]
        assert w.recent.event(mine) is not None and w.recent.event(theirs) is None
        assert check_kept_events_are_the_stored_ones(w) >= 1


def test_a_refused_save_keeps_nothing() -> None:
    with world() as w:
        w.step("record", "this", 0, _details())
        kept = len(w.recent)
        w.step("record again", "this", 0, _details())
        assert len(w.recent) == kept


def test_only_the_newest_events_are_kept() -> None:
    recent = RecentEvents(capacity=3)
    with world() as w:
        w.step("grant", "other", 1, _details())
        (notification,) = w.this.recorder.select_notifications(None, 1_000_000)[-1:]
        event = w.this.mapper.to_domain_event(notification)
    recent.committed([Recording(event, dataclasses.replace(notification, id=i)) for i in range(1, 6)])
    assert len(recent) == 3
    assert [recent.event(dataclasses.replace(notification, id=i)) is not None for i in range(1, 6)] == [
        False,
        False,
        True,
        True,
        True,
    ]


def test_events_of_other_classes_are_not_kept() -> None:
    """An admin command's event (here the deployment's) is decoded from the store, never kept."""
    recent = RecentEvents()
    with world() as w:
        first = w.this.recorder.select_notifications(None, 1)[0]
        recent.committed([Recording(w.this.mapper.to_domain_event(first), first)])
    assert len(recent) == 0


# --- deliberately wrong maps: the comparison above must catch them ------------------------


class _Unchecked(RecentEvents):
    """Hands out whatever it keeps under the id, without comparing the notification's originator."""

    def event(self, notification: Notification) -> DomainEventProtocol[Any] | None:
        return self._events.get(notification.id)


def _fed_before_the_commit(ledger: Ledger, read_models: Any) -> None:
    """Keeps a save's events under the ids it expects them to get, before saving."""
    recent = read_models.runner.recent = _Unchecked()
    save = ledger.save

    def save_after_keeping(*objs: Any, **kwargs: Any) -> Any:
        head = ledger.recorder.max_notification_id() or 0
        pending = [event for obj in objs for event in obj.pending_events]
        recent._events.update({head + 1 + i: event for i, event in enumerate(pending)})
        return save(*objs, **kwargs)

    ledger.save = save_after_keeping  # type: ignore[method-assign]


def _stale_ids(ledger: Ledger, read_models: Any) -> None:
    """Keeps each event under the id after its own."""
    recent = read_models.runner.recent = _Unchecked()
    save = ledger.save

    def save_and_keep_shifted(*objs: Any, **kwargs: Any) -> Any:
        recordings = save(*objs, **kwargs)
        recent._events.update({r.notification.id + 1: r.domain_event for r in recordings})
        return recordings

    ledger.save = save_and_keep_shifted  # type: ignore[method-assign]


@pytest.mark.parametrize("feed", [_fed_before_the_commit, _stale_ids])
def test_a_wrongly_fed_map_is_caught(feed: Callable[[Ledger, Any], None]) -> None:
    with world(feed) as w:
        # the refused save's events, kept before it, stand where the other process's grant lands
        steps = [("record", "this"), ("record again", "this"), ("grant", "other"), ("hold", "this")]
        for command, process in steps:
            w.step(command, process, 7, _details())
        w.settle()
        assert views(w.fed) != views(w.decoded)


def _details() -> RequestDetails:
    return RequestDetails(
        outcome="completed",
        account_id=None,
        api_key_id=None,
        requested_model="m",
        model="p/m",
        provider="p",
        upstream_model="m",
        credential_id=None,
        endpoint="chat.completions",
        stream=False,
        status=200,
        error_code=None,
        usage=None,
        charge=0,
        cost=0,
        uncollected=0,
        hold=0,
        price_book_version=None,
        priced=False,
        latency_ms=1.0,
        ttfb_ms=None,
        started_at=None,
    )
