"""The read-model contract on the in-memory store, plus a property test of balances."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.errors import HoldNotFound, InsufficientCredits
from projections.read_models import ReadModels, build_read_models
from projections.runner import ProjectionRunner
from tests.unit.projections.projection_contract import FakeLedger, ProjectionContract, snapshot

POPO = {"PERSISTENCE_MODULE": "eventsourcing.popo"}


class TestInMemoryProjections(ProjectionContract):
    @pytest.fixture
    def ledger(self) -> Iterator[FakeLedger]:
        app = FakeLedger(env=POPO)
        yield app
        app.close()

    @pytest.fixture
    def make_read_models(self, ledger: FakeLedger) -> Iterator[Callable[[], ReadModels]]:
        """Each call: a new runner over the same in-memory views (a restart, or a second runner)."""
        first = build_read_models(None, ledger)
        made: list[ReadModels] = []

        def make() -> ReadModels:
            runner = ProjectionRunner(ledger, first.store, list(first.runner.projections.values()))
            made.append(
                first
                if not made
                else ReadModels(
                    first.balances, first.usage, first.requests, runner, first.store, (), first.ledger, first.providers
                )
            )
            return made[-1]

        yield make
        for read_models in made:
            read_models.runner.stop()

    def test_catch_up_without_waiting_skips_a_projection_another_runner_is_applying(
        self, ledger: FakeLedger, make_read_models: Callable[[], ReadModels]
    ) -> None:
        first, second = make_read_models(), make_read_models()
        ledger.grant(ledger.open_account("alice"), 5)
        with first.store.tracked("balances") as tx:
            assert tx is not None
            assert (
                second.runner.catch_up(wait=False) == 3
            )  # balances busy; usage/request log: nothing; ledger entries: the grant; audit: creation and grant
        assert second.runner.catch_up(wait=False) == 2


operations = st.lists(
    st.tuples(st.sampled_from(["grant", "hold", "settle", "release"]), st.integers(0, 3), st.integers(1, 500)),
    max_size=40,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations, batch_size=st.integers(1, 9))
def test_balances_match_the_aggregates_for_any_history_and_any_batch_size(
    ops: list[tuple[str, int, int]], batch_size: int
) -> None:
    ledger = FakeLedger(env=POPO)
    read_models = build_read_models(None, ledger, batch_size=batch_size)
    accounts = [ledger.open_account(f"acct-{i}") for i in range(4)]
    open_holds: list[tuple[int, object]] = []
    for op, who, amount in ops:
        account_id = accounts[who]
        try:
            if op == "grant":
                ledger.grant(account_id, amount)
            elif op == "hold":
                request_id = uuid4()
                ledger.hold(account_id, request_id, amount)
                open_holds.append((who, request_id))
            elif open_holds:
                owner, request_id = open_holds.pop(amount % len(open_holds))
                if op == "settle":
                    ledger.settle(accounts[owner], request_id, amount * 3)  # type: ignore[arg-type]
                else:
                    ledger.release(accounts[owner], request_id)  # type: ignore[arg-type]
        except (InsufficientCredits, HoldNotFound):
            pass
        if amount % 7 == 0:
            read_models.runner.catch_up()  # live batches end at arbitrary points
    read_models.runner.catch_up()

    for account_id in accounts:
        account = ledger.account(account_id)
        row = read_models.balances.get_balance(account_id)
        assert row is not None
        assert (row.balance, row.held, row.available) == (account.balance, account.held, account.available)
        assert sorted(h.request_id.hex for h in read_models.balances.list_open_holds(account_id)) == sorted(
            account.holds
        )
    live = snapshot(read_models)
    read_models.runner.rebuild()
    assert snapshot(read_models) == live
    ledger.close()
