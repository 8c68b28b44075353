"""The alert process on real read-model stores (a SQLite file, a PostgreSQL schema): its state
is committed with its tracked position, so two workers deriving at once and a restart derive
each notice once — 32 concurrent requests that take an account across a threshold yield one
``balance.low``, published once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from uuid import uuid4

import pytest

from adapters.settings import DatabaseConfig
from application.accounts import Accounts
from application.alerts import AlertProcess, AlertThresholds
from application.ledger import Ledger
from projections.read_models import ReadModels, build_read_models
from tests.fakes.clock import FakeClock
from tests.fakes.notice_outbox import FakeNoticeOutbox

C = 10**9


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> DatabaseConfig:
    return request.getfixturevalue(f"{request.param}_database")


@pytest.fixture
def workers(
    database: DatabaseConfig, ledger: Ledger, clock: FakeClock
) -> Iterator[Callable[[FakeNoticeOutbox], ReadModels]]:
    made: list[ReadModels] = []

    def make(outbox: FakeNoticeOutbox) -> ReadModels:
        read_models = build_read_models(
            database, ledger, alerts=lambda states: AlertProcess(states, outbox, now=clock.now)
        )
        if not made:
            read_models.create_tables()
        made.append(read_models)
        return read_models

    yield make
    for read_models in made:
        read_models.close()


def spend(ledger: Ledger, amount: int) -> None:
    account_id = ledger.get_account("acme").id
    request = uuid4()
    expires = ledger.clock.now() + timedelta(minutes=15)
    ledger.change_account(account_id, lambda a: (a.place_hold(request, amount, expires), [])[1])
    ledger.change_account(account_id, lambda a: (a.settle_hold(request, amount), [])[1])


def test_two_workers_and_32_concurrent_requests_yield_one_balance_low(
    ledger: Ledger, workers: Callable[[FakeNoticeOutbox], ReadModels]
) -> None:
    accounts = Accounts(ledger)
    accounts.create_account("acme")
    accounts.grant_credits("acme", 100 * C)
    AlertThresholds(ledger).set_thresholds("acme", [50 * C])
    outbox = FakeNoticeOutbox()
    first, second = workers(outbox), workers(outbox)
    start = threading.Barrier(32)

    def request(index: int) -> None:
        start.wait()
        spend(ledger, 3 * C)
        (first if index % 2 else second).runner.catch_up()

    threads = [threading.Thread(target=request, args=(i,)) for i in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    first.runner.catch_up()
    second.runner.catch_up()

    [low] = outbox.of_type("balance.low")
    assert low.data["threshold_nanocredits"] == 50 * C and low.data["available_nanocredits"] < 50 * C
    assert outbox.published == 1  # derived once, by one of the two workers

    restarted = workers(outbox)  # a restart resumes from the tracked position: nothing again
    restarted.runner.catch_up()
    assert outbox.published == 1
    accounts.grant_credits("acme", 60 * C)  # 64: re-armed
    spend(ledger, 20 * C)  # 44: below again
    restarted.runner.catch_up()
    assert len(outbox.of_type("balance.low")) == 2 and outbox.published == 2
    assert restarted.runner.rebuild("alerts") > 0  # derived again from zero: the same ids
    assert len(outbox.of_type("balance.low")) == 2
