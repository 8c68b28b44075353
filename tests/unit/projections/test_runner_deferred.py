"""A pass takes a projection's transaction only for a batch holding an event it follows
(projections/runner.py): the others keep their positions until a settling pass, their
next followed event, or a batch's worth of notifications they do not follow; every
event is still applied exactly once, and ``lag`` returns to 0."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.utils import get_topic

from domain.account import Account
from domain.errors import ProjectionStopped
from domain.request_record import RequestRecord
from projections.memory import InMemoryStore, MemoryTransaction
from projections.runner import FULL_PASS_SECONDS, ProjectionRunner
from projections.store import Schema, Stop
from tests.unit.projections.projection_contract import T0, FakeLedger, wait_until
from tests.unit.projections.test_ledger_entries import POPO

ACCOUNT_TOPICS = frozenset(get_topic(cls) for cls in (Account.Created, Account.CreditGranted))
REQUEST_TOPICS = frozenset({get_topic(RequestRecord.Completed)})


class Recording:
    """Follows ``topics``; notes the notification id of each event it applied (on commit).
    It cannot apply an event whose id is in ``failing``."""

    def __init__(self, name: str, topics: frozenset[str]) -> None:
        self.name, self.topics = name, topics
        self.applied: list[int] = []
        self.failing: set[int] = set()

    def process_at(self, tx: MemoryTransaction, events: list[DomainEventProtocol[Any]], positions: list[int]) -> None:
        if self.failing.intersection(positions):
            raise ValueError("cannot store this event")
        tx.on_commit(lambda: self.applied.extend(positions))

    def clear(self, tx: MemoryTransaction) -> None:
        tx.on_commit(self.applied.clear)


class WatchedStore:
    """An InMemoryStore that counts the transactions opened per projection, can lose its
    connection before the next commit (``crash_next``), and calls ``between`` after each
    transaction ends (another runner's turn)."""

    def __init__(self) -> None:
        self.inner = InMemoryStore()
        self.opened: Counter[str] = Counter()
        self.crash_next = False
        self.between: Callable[[], None] = lambda: None

    @contextmanager
    def tracked(self, name: str, *, wait: bool = True) -> Iterator[MemoryTransaction | None]:
        try:
            with self.inner.tracked(name, wait=wait) as tx:
                self.opened[name] += tx is not None
                yield tx
                if self.crash_next:
                    self.crash_next = False
                    raise OSError("connection lost before the commit")
        finally:
            self.between()

    def positions(self) -> dict[str, int]:
        return self.inner.positions()

    def stops(self) -> dict[str, Stop]:
        return self.inner.stops()

    def is_transient(self, exc: BaseException) -> bool:
        return False

    def upgrade(self, schemas: Sequence[Schema]) -> list[str]:
        return []


class Setup:
    def __init__(self, batch_size: int = 1000) -> None:
        self.ledger = FakeLedger(env=POPO)
        self.store = WatchedStore()
        self.accounts = Recording("accounts", ACCOUNT_TOPICS)
        self.requests = Recording("requests", REQUEST_TOPICS)
        self.batch_size = batch_size
        self.alice = self.ledger.open_account("alice")

    def runner(self) -> ProjectionRunner:
        """A runner over the shared store, as another process (or a restarted one) has it."""
        return ProjectionRunner(self.ledger, self.store, [self.accounts, self.requests], batch_size=self.batch_size)

    def head(self) -> int:
        return self.ledger.recorder.max_notification_id() or 0

    def position(self, name: str) -> int:
        return self.store.positions().get(name, 0)

    def followed(self, projection: Recording, up_to: int | None = None) -> list[int]:
        notifications = self.ledger.recorder.select_notifications(None, 1_000_000)
        last = self.head() if up_to is None else up_to
        return [n.id for n in notifications if n.topic in projection.topics and n.id <= last]

    def grant(self, times: int = 1) -> None:
        for _ in range(times):
            self.ledger.grant(self.alice, 5)

    def record(self) -> None:
        self.ledger.record(T0, account_id=self.alice)


@pytest.fixture
def setup() -> Setup:
    return Setup()


def test_a_deferring_pass_locks_only_the_projections_whose_batch_holds_an_event_they_follow(setup: Setup) -> None:
    runner = setup.runner()
    runner.catch_up()
    setup.store.opened.clear()
    before = setup.position("requests")

    setup.grant(3)
    assert runner.catch_up(defer=True) == 3

    assert setup.store.opened == {"accounts": 1}
    assert setup.position("accounts") == setup.head() and setup.position("requests") == before
    assert setup.accounts.applied == setup.followed(setup.accounts)


def test_the_next_followed_event_passes_the_skipped_span_in_its_own_transaction(setup: Setup) -> None:
    runner = setup.runner()
    runner.catch_up()
    setup.grant(3)
    runner.catch_up(defer=True)
    setup.store.opened.clear()

    setup.record()
    assert runner.catch_up(defer=True) == 1

    assert setup.store.opened == {"requests": 1}
    assert setup.position("requests") == setup.head()
    assert setup.requests.applied == setup.followed(setup.requests) == [setup.head()]


def test_a_settling_pass_moves_every_position_to_the_head_and_lag_returns_to_zero(setup: Setup) -> None:
    runner = setup.runner()
    runner.catch_up()
    setup.grant(4)
    runner.catch_up(defer=True)
    assert {s.name: s.lag for s in runner.status()} == {"accounts": 0, "requests": 4}
    setup.store.opened.clear()

    assert runner.catch_up() == 0

    assert setup.store.opened == {"requests": 1}  # the one with skipped notifications; not the other
    assert {s.name: s.lag for s in runner.status()} == {"accounts": 0, "requests": 0}


def test_a_projection_with_nothing_to_apply_never_falls_a_batch_behind() -> None:
    setup = Setup(batch_size=4)
    runner = setup.runner()
    runner.catch_up()
    setup.store.opened.clear()
    for _ in range(20):
        setup.grant()
        runner.catch_up(defer=True)
        assert 0 <= setup.head() - setup.position("requests") < setup.batch_size
    assert setup.store.opened["requests"] == 5  # one transaction per batch_size notifications it skipped
    assert setup.requests.applied == []


def test_a_restarted_runner_applies_each_event_once_from_where_the_positions_were_left(setup: Setup) -> None:
    first = setup.runner()
    first.catch_up()
    setup.grant(2)
    setup.record()
    setup.grant(2)
    first.catch_up(defer=True)  # requests applied the record; accounts and requests may lag behind
    second = setup.runner()  # a crash between passes: the first runner's notes are gone

    setup.record()
    second.catch_up(defer=True)
    second.catch_up()

    for projection in (setup.accounts, setup.requests):
        assert projection.applied == setup.followed(projection)
        assert setup.position(projection.name) == setup.head()


def test_a_lost_connection_rolls_back_the_skipped_span_with_the_batch(setup: Setup) -> None:
    runner = setup.runner()
    runner.catch_up()
    setup.grant(3)
    runner.catch_up(defer=True)
    skipped_from = setup.position("requests")
    setup.record()

    setup.store.crash_next = True
    with pytest.raises(OSError):
        runner.catch_up(defer=True)  # requests' transaction, span and record, is lost

    assert setup.position("requests") == skipped_from and setup.requests.applied == []
    runner.catch_up(defer=True)
    assert setup.requests.applied == setup.followed(setup.requests)
    assert setup.position("requests") == setup.head()


def test_a_projection_seen_stopped_is_looked_at_each_pass_so_a_resume_elsewhere_is_seen(setup: Setup) -> None:
    serve = setup.runner()
    serve.catch_up()
    setup.record()
    setup.requests.failing = {setup.head()}
    serve.catch_up(defer=True)
    with pytest.raises(ProjectionStopped):
        serve.check_running("requests")

    setup.requests.failing = set()
    cli = setup.runner()
    cli.rebuild("requests")  # another process applies past the event and clears the stop
    setup.grant(2)  # nothing requests follows
    serve.catch_up(defer=True)

    serve.check_running("requests")
    assert setup.requests.applied == setup.followed(setup.requests)


def test_an_event_that_fails_after_a_skipped_span_stops_the_projection_there(setup: Setup) -> None:
    runner = setup.runner()
    runner.catch_up()
    setup.grant(3)
    runner.catch_up(defer=True)
    setup.record()
    setup.requests.failing = {setup.head()}

    runner.catch_up(defer=True)

    stopped = runner.stopped("requests")
    assert stopped is not None and stopped.position == setup.head()
    assert setup.position("requests") < stopped.position
    assert setup.requests.applied == []


def test_notes_taken_before_a_rebuild_do_not_skip_its_replay(setup: Setup) -> None:
    poller = setup.runner()
    setup.record()
    poller.catch_up()
    setup.grant(3)
    poller.catch_up(defer=True)  # notes: nothing requests follows after the record
    setup.record()
    cli = setup.runner()

    def poller_between_reset_and_replay() -> None:
        setup.store.between = lambda: None
        poller.catch_up(defer=True)

    setup.store.between = poller_between_reset_and_replay
    cli.rebuild("requests")

    assert setup.requests.applied == setup.followed(setup.requests)
    assert setup.position("requests") == setup.head()


def test_the_poller_applies_at_once_and_brings_every_lag_to_zero_when_idle(setup: Setup) -> None:
    runner = setup.runner()
    runner.start()
    try:
        setup.record()
        setup.grant(3)
        runner.wake()
        lags_zero = lambda: all(s.lag == 0 for s in runner.status())  # noqa: E731
        assert wait_until(lags_zero, timeout=5 * FULL_PASS_SECONDS)
    finally:
        runner.stop()
    for projection in (setup.accounts, setup.requests):
        assert projection.applied == setup.followed(projection)
