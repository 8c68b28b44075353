"""Two runners on one read-model store — a serve's poller and a CLI's catch-up or
``projections rebuild`` — whichever interleaving of their transactions: a projection
that cannot apply an event is stopped there, with the events before it applied exactly
once, and the stop is logged once in all; a rebuild that meets the event again says so
itself, and the other runner leaves the projection alone meanwhile. On SQLite and on
PostgreSQL.

The interleaving is made deterministic: the other runner runs a whole catch-up after
each transaction of the first one ends (committed or rolled back)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from adapters.settings import DatabaseConfig
from projections.read_models import ReadModels, unguarded
from tests.unit.projections.projection_contract import NANO, T0, FakeLedger

HUGE = 10**20  # past 64 bits: no INTEGER/BIGINT column holds it
REQUEST_MODELS = ("usage", "request_log", "provider_hourly")


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> DatabaseConfig:
    return request.getfixturevalue(f"{request.param}_database")


@pytest.fixture
def ledger(database: DatabaseConfig) -> Iterator[FakeLedger]:
    app = FakeLedger(env=database.eventsourcing_env(create_tables=True))
    yield app
    app.close()


def plant_unstorable_request(ledger: FakeLedger) -> int:
    """A charged request, one whose usage no read model can store, then another; the bad one's position."""
    alice = ledger.open_account("alice")
    ledger.grant(alice, NANO)
    ledger.record(T0, account_id=alice, charge=5)
    ledger.record(T0, account_id=alice, tokens=(HUGE, HUGE), charge=HUGE)
    planted = ledger.recorder.max_notification_id()
    ledger.record(T0, account_id=alice, charge=7)
    return planted


class Interleaved:
    """After a transaction of a runner's store ends, ``other`` runs a catch-up: after each
    one, or (``after_failure=n``) only after the ``n``-th that rolled back. The log records
    each side wrote are kept apart."""

    def __init__(
        self, caplog: pytest.LogCaptureFixture, other: Callable[[], Any], *, after_failure: int | None = None
    ) -> None:
        self.caplog, self.other, self.after_failure = caplog, other, after_failure
        self.others: list[logging.LogRecord] = []
        self.failures = 0

    def attach(self, monkeypatch: pytest.MonkeyPatch, read_models: ReadModels) -> None:
        tracked = read_models.store.tracked

        @contextmanager
        def tracked_then_other(name: str, *, wait: bool = True) -> Iterator[Any]:
            failed = False
            try:
                with tracked(name, wait=wait) as tx:
                    yield tx
            except BaseException:
                failed, self.failures = True, self.failures + 1
                raise
            finally:
                if self.after_failure is None or (failed and self.failures == self.after_failure):
                    self._run_other()

        monkeypatch.setattr(read_models.store, "tracked", tracked_then_other)

    def own(self) -> list[str]:
        """The messages the interleaved runner itself logged."""
        return [r.getMessage() for r in self.caplog.records if r not in self.others]

    def _run_other(self) -> None:
        before = len(self.caplog.records)
        self.other()
        self.others.extend(self.caplog.records[before:])


def stop_lines(messages: list[str], planted: int) -> dict[str, int]:
    """How many times each projection logged that it stopped at ``planted``."""
    counts = {name: 0 for name in REQUEST_MODELS}
    for message in messages:
        for name in REQUEST_MODELS:
            counts[name] += message.startswith(f"projection {name} stopped at event {planted} ")
    return counts


# usage, the first request read model, fails the first runner's whole batch (1st roll-back),
# then the chunk that holds the bad event (2nd): the poller meets it before the first runner
# looks for the event, or before it records the stop. The first runner is a CLI's catch-up,
# or a restarted worker's first pass (which tries again the stops there were when it began).
@pytest.mark.parametrize("after_failure", [1, 2], ids=["before-isolating", "before-stopping"])
@pytest.mark.parametrize("retry_stopped", [False, True], ids=["catch-up", "first-pass"])
def test_two_runners_meeting_the_same_bad_event_stop_it_once_and_log_it_once(
    ledger: FakeLedger,
    make_read_models: Callable[[], ReadModels],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    after_failure: int,
    retry_stopped: bool,
) -> None:
    planted = plant_unstorable_request(ledger)
    first, serve = make_read_models(), make_read_models()
    races = Interleaved(caplog, lambda: serve.runner.catch_up(wait=False), after_failure=after_failure)
    races.attach(monkeypatch, first)

    with caplog.at_level(logging.WARNING, logger="tallyhub.projections"):
        first.runner.catch_up(retry_stopped=retry_stopped)

    assert races.failures >= after_failure
    assert stop_lines([r.getMessage() for r in races.others], planted) == {name: 1 for name in REQUEST_MODELS}
    assert races.own() == []  # the first runner found each stop made and said nothing more
    assert first.store.positions()["request_log"] == planted - 1
    assert {name: stop.position for name, stop in first.store.stops().items()} == {n: planted for n in REQUEST_MODELS}
    assert [r.charge for r in unguarded(first.requests).list_requests()] == [5]  # applied once, by one of them


def test_a_rebuild_that_meets_the_bad_event_again_says_so_and_the_other_runner_leaves_it_alone(
    ledger: FakeLedger,
    make_read_models: Callable[[], ReadModels],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    planted = plant_unstorable_request(ledger)
    serve = make_read_models()
    with caplog.at_level(logging.WARNING, logger="tallyhub.projections"):
        serve.runner.catch_up()
    assert stop_lines([r.getMessage() for r in caplog.records], planted) == {name: 1 for name in REQUEST_MODELS}
    stopped_on = serve.store.stops()["request_log"].stopped_on
    caplog.clear()

    cli = make_read_models()  # `tallyhub projections rebuild request_log` beside the serve's poller
    races = Interleaved(caplog, lambda: serve.runner.catch_up(wait=False))
    races.attach(monkeypatch, cli)
    with caplog.at_level(logging.WARNING, logger="tallyhub.projections"):
        cli.runner.rebuild("request_log")

    assert [r.getMessage() for r in races.others] == []  # the poller skipped it: still stopped, not its replay
    said = races.own()
    assert len(said) == 1 and said[0].startswith(
        f"projection request_log tried event {planted} again and still cannot apply it: "
    )
    stop = cli.store.stops()["request_log"]
    assert (stop.position, cli.store.positions()["request_log"]) == (planted, planted - 1)
    assert stop.stopped_on >= stopped_on
    assert [r.charge for r in unguarded(cli.requests).list_requests()] == [5]  # replayed once, by the rebuild
    assert cli.runner.stopped("request_log") == stop and serve.runner.stopped("request_log") is not None
