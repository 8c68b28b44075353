"""The runner hands a ``PositionedProjection`` each event's notification id (runner.py):
the ledger entries never read the event store to find their positions, and the positions
they store are exactly the notification ids, however the runner splits the history into
batches and when it isolates a failing event."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import ApplicationRecorder, Notification

from projections.ledger_entries import InMemoryLedgerEntriesView, LedgerEntriesProjection, LedgerEntry
from projections.memory import InMemoryStore, MemoryTransaction
from projections.read_models import build_read_models
from projections.runner import PositionedProjection, ProjectionRunner
from tests.unit.projections.projection_contract import FakeLedger
from tests.unit.projections.test_ledger_entries import POPO

FAILING_AMOUNT = 13


class CountingRecorder:
    """The application's recorder, noting every ``select_notifications`` call."""

    def __init__(self, inner: ApplicationRecorder) -> None:
        self.inner = inner
        self.reads: list[tuple[int | None, int, tuple[str, ...]]] = []

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        self.reads.append((start, limit, tuple(topics)))
        return self.inner.select_notifications(start, limit, stop, topics, inclusive_of_start=inclusive_of_start)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class CountingLedger(FakeLedger):
    """A FakeLedger whose readers (the runner) read through a ``CountingRecorder``; its
    own writes go straight to the store."""

    def __init__(self) -> None:
        super().__init__(env=POPO)
        self.counting = CountingRecorder(self.recorder)
        self.recorder = self.counting  # type: ignore[assignment]


class FailingView(InMemoryLedgerEntriesView):
    """Refuses any batch holding a movement of ``FAILING_AMOUNT`` while ``failing``."""

    failing = True

    def apply(self, tx: MemoryTransaction, entries: list[LedgerEntry]) -> None:
        if self.failing and any(entry.amount == FAILING_AMOUNT for entry in entries):
            raise ValueError("cannot store this movement")
        super().apply(tx, entries)


def all_ids(ledger: CountingLedger) -> list[int]:
    return [n.id for n in ledger.counting.inner.select_notifications(None, 100_000)]


def movement_ids(ledger: CountingLedger) -> list[int]:
    """Notification ids of the movements, read past the counting recorder."""
    topics = sorted(LedgerEntriesProjection.topics)
    return [n.id for n in ledger.counting.inner.select_notifications(None, 100_000, topics=topics)]


def positions_of(view: InMemoryLedgerEntriesView, accounts: list[UUID]) -> list[int]:
    return sorted(entry.position for account in accounts for entry in view.list_entries(account))


def test_the_ledger_entries_take_positions_from_the_runner_not_from_the_store() -> None:
    assert isinstance(LedgerEntriesProjection(InMemoryLedgerEntriesView(InMemoryStore())), PositionedProjection)


def test_a_catch_up_reads_each_batch_once_and_nothing_for_positions() -> None:
    ledger = CountingLedger()
    accounts = [ledger.open_account("alice"), ledger.open_account("bob")]
    for i in range(10):
        ledger.grant(accounts[i % 2], i + 1)
    store = InMemoryStore()
    view = InMemoryLedgerEntriesView(store)
    runner = ProjectionRunner(ledger, store, [LedgerEntriesProjection(view)], batch_size=5)
    ids = all_ids(ledger)
    assert len(ids) == 12

    ledger.counting.reads.clear()
    assert runner.catch_up() == 10

    # the runner's own batches (5, 5 and the last 2), and not one read more
    assert ledger.counting.reads == [(0, 5, ()), (ids[4], 5, ()), (ids[9], 5, ())]
    assert positions_of(view, accounts) == movement_ids(ledger) == ids[2:]


def test_positions_are_the_notification_ids_in_split_batches_and_after_an_isolated_failure() -> None:
    ledger = CountingLedger()
    alice, bob = ledger.open_account("alice"), ledger.open_account("bob")
    for account, amount in [(alice, 1), (bob, 2), (alice, 3), (bob, FAILING_AMOUNT), (alice, 5), (bob, 6)]:
        ledger.grant(account, amount)
    store = InMemoryStore()
    view = FailingView(store)
    runner = ProjectionRunner(ledger, store, [LedgerEntriesProjection(view)], batch_size=4)
    ids = all_ids(ledger)  # alice, bob, then the six grants
    ledger.counting.reads.clear()

    runner.catch_up()  # the second batch fails: applied again one movement at a time, it stops at the 13

    stopped = runner.stopped("ledger_entries")
    assert stopped is not None and stopped.position == ids[5]
    assert positions_of(view, [alice, bob]) == ids[2:5]
    assert all(topics == () for _, _, topics in ledger.counting.reads)

    view.failing = False
    runner.catch_up(retry_stopped=True)
    assert runner.stopped("ledger_entries") is None
    assert positions_of(view, [alice, bob]) == ids[2:] == movement_ids(ledger)
    assert [(e.amount, e.balance) for e in view.list_entries(bob)] == [(2, 2), (FAILING_AMOUNT, 15), (6, 21)]
    assert all(topics == () for _, _, topics in ledger.counting.reads)


def test_the_read_models_never_ask_the_store_for_movements() -> None:
    ledger = CountingLedger()
    alice = ledger.open_account("alice")
    for amount in range(1, 8):
        ledger.grant(alice, amount)
    read_models = build_read_models(None, ledger, batch_size=3)
    ledger.counting.reads.clear()

    read_models.runner.catch_up()

    assert read_models.ledger is not None
    assert [e.position for e in read_models.ledger.list_entries(alice)] == movement_ids(ledger)
    assert ledger.counting.reads and all(topics == () for _, _, topics in ledger.counting.reads)


def test_an_applied_batch_that_misses_a_notification_in_the_middle_is_refused() -> None:
    ledger = CountingLedger()
    alice = ledger.open_account("alice")
    ledger.grant(alice, 1)
    ledger.grant(alice, 2)
    store = InMemoryStore()
    view = InMemoryLedgerEntriesView(store)
    runner = ProjectionRunner(ledger, store, [LedgerEntriesProjection(view)])
    created, first, second = ledger.counting.inner.select_notifications(None, 10)

    with pytest.raises(LookupError, match=f"not every notification after position 0 up to {second.id}"):
        runner.apply("ledger_entries", [created, second])  # the first grant is missing
    assert store.positions().get("ledger_entries", 0) == 0 and view.list_entries(alice) == []

    assert runner.apply("ledger_entries", [created, first, second]) == 2
    assert [(e.position, e.balance) for e in view.list_entries(alice)] == [(first.id, 1), (second.id, 3)]
