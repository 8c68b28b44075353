"""The ledger-entries read model: one row per movement with its event position and the
running balance. ``LedgerEntriesContract`` runs here in memory and, in
tests/integration/projections/test_ledger_entries_sql.py, on SQLite and PostgreSQL.

A backend provides ``open_backend``: a factory of context managers, each yielding a
fresh ``(MovementsLedger, ReadModels)`` pair on an empty store and closing it after.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.billing import RequestBilling, RequestShape
from application.ledger import Ledger
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from domain.errors import HoldNotFound, InsufficientCredits, InvalidRequest
from domain.usage import Usage
from projections.ledger_entries import LedgerEntriesProjection, LedgerEntry
from projections.read_models import ReadModels, build_read_models
from tests.support.routes import first_route
from tests.unit.projections.projection_contract import NANO, T0, FakeLedger

POPO = {"PERSISTENCE_MODULE": "eventsourcing.popo"}

Backend = tuple["MovementsLedger", ReadModels]
OpenBackend = Callable[[], AbstractContextManager[Backend]]


class MovementsLedger(FakeLedger):
    """FakeLedger plus the two movements it lacks."""

    def adjust(self, account_id: UUID, amount: int, key: str | None = None) -> int:
        account = self.repository.get(account_id)
        applied = account.adjust(amount, reason="correction", idempotency_key=key)
        self.save(account)
        return applied

    def refund(self, account_id: UUID, request_id: UUID, amount: int) -> None:
        account = self.repository.get(account_id)
        account.refund_charge(request_id, amount, reason="bad answer")
        self.save(account)


def movement_positions(ledger: FakeLedger) -> list[int]:
    """Notification ids of every movement in the store, read straight from the recorder."""
    topics = sorted(LedgerEntriesProjection.topics)
    return [n.id for n in ledger.recorder.select_notifications(None, 100_000, topics=topics)]


def all_entries(read_models: ReadModels, accounts: list[UUID]) -> list[dict[str, Any]]:
    assert read_models.ledger is not None
    return [asdict(e) for a in accounts for e in read_models.ledger.list_entries(a)]


def check_running_balances(entries: list[LedgerEntry]) -> None:
    balance = 0
    for entry in entries:
        balance += entry.amount
        assert entry.balance == balance, entry
    assert [e.position for e in entries] == sorted({e.position for e in entries})


def first_at_or_after(entries: list[LedgerEntry], at: datetime | None) -> int:
    return len(entries) if at is None else next((i for i, e in enumerate(entries) if e.at >= at), len(entries))


def check_window(read_models: ReadModels, account_id: UUID, since: datetime | None, until: datetime | None) -> None:
    view = read_models.ledger
    assert view is not None
    everything = view.list_entries(account_id)
    window = view.list_entries(account_id, since, until)
    start = 0 if since is None else first_at_or_after(everything, since)
    assert window == everything[start : max(start, first_at_or_after(everything, until))]
    if since is not None and until is not None and since > until:
        assert window == []  # an inverted window is empty (and a statement refuses it)
        return
    opening, closing = view.opening_balance(account_id, since), view.closing_balance(account_id, until)
    assert opening + sum(e.amount for e in window) == closing
    if window:
        assert (opening, closing) == (window[0].balance - window[0].amount, window[-1].balance)


operations = st.lists(
    st.tuples(
        st.sampled_from(["grant", "adjust", "refund", "hold", "settle", "release", "late"]),
        st.integers(0, 2),
        st.integers(1, 500),
    ),
    max_size=30,
)


def check_any_history(
    open_backend: OpenBackend, ops: list[tuple[str, int, int]], batch_size: int, data: st.DataObject
) -> None:
    """Per account, in position order: the rows are the movements made, each balance is the
    sum so far and the last is the balance; any window reconciles; a rebuild changes nothing."""
    with open_backend() as (ledger, read_models):
        read_models.runner.batch_size = batch_size
        accounts = [ledger.open_account(f"acct-{i}") for i in range(3)]
        expected: dict[UUID, list[tuple[str, int]]] = {a: [] for a in accounts}
        open_holds: list[tuple[UUID, UUID]] = []
        charged: list[tuple[UUID, UUID]] = []
        for op, who, amount in ops:
            account = accounts[who]
            try:
                if op == "grant":
                    ledger.grant(account, amount)
                    expected[account].append(("grant", amount))
                elif op == "adjust":
                    wanted = amount if amount % 2 else -3 * amount  # debits are often capped
                    expected[account].append(("adjustment", ledger.adjust(account, wanted)))
                elif op == "refund" and charged:
                    owner, request_id = charged[amount % len(charged)]
                    ledger.refund(owner, request_id, amount)
                    expected[owner].append(("refund", amount))
                elif op == "hold":
                    request_id = uuid4()
                    ledger.hold(account, request_id, amount)
                    open_holds.append((account, request_id))
                elif op in ("settle", "release") and open_holds:
                    owner, request_id = open_holds.pop(amount % len(open_holds))
                    if op == "settle":
                        expected[owner].append(("charge", -ledger.settle(owner, request_id, amount * 2)))
                        charged.append((owner, request_id))
                    else:
                        ledger.release(owner, request_id)
                elif op == "late":
                    request_id = uuid4()
                    expected[account].append(("charge", -ledger.charge_late(account, request_id, amount)))
                    charged.append((account, request_id))
            except (InsufficientCredits, HoldNotFound, InvalidRequest):
                pass
            if amount % 5 == 0:
                read_models.runner.catch_up()  # live batches end at arbitrary points
        read_models.runner.catch_up()
        view = read_models.ledger
        assert view is not None

        for account in accounts:
            rows = view.list_entries(account)
            assert [(r.kind, r.amount) for r in rows] == expected[account]
            check_running_balances(rows)
            balance = read_models.balances.get_balance(account)
            assert balance is not None
            assert view.closing_balance(account) == ledger.account(account).balance == balance.balance
            if rows:
                i = data.draw(st.integers(0, len(rows)), label="since")
                j = data.draw(st.integers(0, len(rows)), label="until")
                since = rows[i].at if i < len(rows) else None
                until = rows[j].at if j < len(rows) else None
                check_window(read_models, account, since, until)
        assert sorted(r.position for a in accounts for r in view.list_entries(a)) == movement_positions(ledger)

        live = all_entries(read_models, accounts)
        read_models.runner.batch_size = 1000
        read_models.runner.rebuild("ledger_entries")
        assert all_entries(read_models, accounts) == live


class LedgerEntriesContract:
    history_examples = 40

    @pytest.fixture
    def backend(self, open_backend: OpenBackend) -> Iterator[Backend]:
        with open_backend() as backend:
            yield backend

    def test_every_movement_is_one_row_with_its_event_position_and_the_running_balance(self, backend: Backend) -> None:
        ledger, read_models = backend
        alice, bob = ledger.open_account("alice"), ledger.open_account("bob")
        ledger.grant(alice, 5 * NANO)
        ledger.grant(bob, NANO)
        settled, released, late, short = uuid4(), uuid4(), uuid4(), uuid4()
        ledger.hold(alice, settled, 300)
        assert ledger.settle(alice, settled, 120) == 120
        ledger.hold(alice, released, 50)
        ledger.release(alice, released)
        ledger.refund(alice, settled, 20)
        assert ledger.adjust(alice, -7, key="fix-1") == -7
        ledger.hold(bob, short, 10)
        assert ledger.settle(bob, short, 3 * NANO) == NANO  # bob can pay only what he has
        assert ledger.charge_late(alice, late, 6 * NANO) == 5 * NANO - 107  # after its hold expired
        assert ledger.adjust(alice, -NANO) == 0 and ledger.adjust(alice, 9) == 9
        read_models.runner.catch_up()
        assert read_models.ledger is not None

        rows = read_models.ledger.list_entries(alice)
        assert [(r.kind, r.amount, r.balance) for r in rows] == [
            ("grant", 5 * NANO, 5 * NANO),
            ("charge", -120, 5 * NANO - 120),
            ("refund", 20, 5 * NANO - 100),
            ("adjustment", -7, 5 * NANO - 107),
            ("charge", -(5 * NANO - 107), 0),
            ("adjustment", 0, 0),
            ("adjustment", 9, 9),
        ]
        assert rows[-1].balance == ledger.account(alice).balance == read_models.balances.get_balance(alice).balance  # type: ignore[union-attr]
        grant, charge, refund, fix, late_charge, capped, _ = rows
        assert (grant.reason, grant.idempotency_key, grant.request_id, grant.uncollected, grant.held) == (
            "test",
            None,
            None,
            0,
            0,
        )
        assert (charge.request_id, charge.held, charge.uncollected, charge.reason) == (settled, 300, 0, None)
        assert (refund.request_id, refund.reason) == (settled, "bad answer")
        assert (fix.reason, fix.idempotency_key, fix.uncollected) == ("correction", "fix-1", 0)
        assert (late_charge.request_id, late_charge.held, late_charge.uncollected) == (late, 0, NANO + 107)
        assert capped.uncollected == NANO  # a debit takes no more than is available
        assert all(r.account_id == alice and r.at.tzinfo is not None for r in rows)

        bob_rows = read_models.ledger.list_entries(bob)
        assert [(r.kind, r.amount, r.balance, r.uncollected) for r in bob_rows] == [
            ("grant", NANO, NANO, 0),
            ("charge", -NANO, 0, 2 * NANO),
        ]
        assert sorted(r.position for r in rows + bob_rows) == movement_positions(ledger)
        assert read_models.ledger.list_entries(uuid4()) == []

    def test_holds_placed_and_released_move_nothing_and_make_no_row(self, backend: Backend) -> None:
        ledger, read_models = backend
        alice = ledger.open_account("alice")
        ledger.grant(alice, 100)
        for _ in range(3):
            request_id = uuid4()
            ledger.hold(alice, request_id, 30)
            ledger.release(alice, request_id)
        ledger.hold(alice, uuid4(), 60)  # still open
        read_models.runner.catch_up()
        assert read_models.ledger is not None
        assert [(r.kind, r.balance) for r in read_models.ledger.list_entries(alice)] == [("grant", 100)]
        assert read_models.ledger.closing_balance(alice) == 100 == read_models.balances.get_balance(alice).balance  # type: ignore[union-attr]

    def test_a_window_lists_its_rows_and_opening_plus_movements_is_closing(self, backend: Backend) -> None:
        ledger, read_models = backend
        alice = ledger.open_account("alice")
        for amount in (1_000, 2_000, 3_000, 4_000, 5_000):  # a pause between rows: no two share a time
            ledger.grant(alice, amount)
            time.sleep(0.002)
            request_id = uuid4()
            ledger.hold(alice, request_id, 500)
            ledger.settle(alice, request_id, amount // 10)
            time.sleep(0.002)
        read_models.runner.catch_up()
        view = read_models.ledger
        assert view is not None
        rows = view.list_entries(alice)
        assert len(rows) == 10

        since, until = rows[3].at, rows[7].at
        assert view.list_entries(alice, since, until) == rows[3:7]
        assert view.opening_balance(alice, since) == rows[2].balance
        assert view.closing_balance(alice, until) == rows[6].balance
        assert view.list_entries(alice, since) == rows[3:]
        assert view.list_entries(alice, until=until) == rows[:7]
        assert view.list_entries(alice, since, until, limit=2) == rows[3:5]
        assert view.opening_balance(alice, None) == 0 and view.closing_balance(alice) == rows[-1].balance
        later = rows[-1].at + timedelta(seconds=1)
        assert view.list_entries(alice, later) == [] and view.opening_balance(alice, later) == rows[-1].balance
        assert view.list_entries(alice, until=rows[0].at) == [] and view.closing_balance(alice, rows[0].at) == 0
        assert view.list_entries(alice, until, since) == []  # an inverted window is empty
        for a, b in [(None, None), (since, None), (None, until), (since, until), (later, None), (until, since)]:
            check_window(read_models, alice, a, b)

    def test_a_window_follows_the_ledger_order_when_clocks_disagree(self, backend: Backend) -> None:
        """Rows written straight to the view, the second one stamped a second *before* the first."""
        _, read_models = backend
        view = read_models.ledger
        assert view is not None
        alice = uuid4()
        stamps = [T0, T0 - timedelta(seconds=1), T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)]
        made = [
            LedgerEntry(
                position=10 * (i + 1),
                account_id=alice,
                at=at,
                kind="grant",
                amount=100 * (i + 1),
                balance=0,
                reason="r",
            )
            for i, at in enumerate(stamps)
        ]
        with read_models.store.tracked("ledger_entries") as tx:
            view.apply(tx, made[:2])
        with read_models.store.tracked("ledger_entries") as tx:
            view.apply(tx, made[2:])
        rows = view.list_entries(alice)
        assert [(r.position, r.balance) for r in rows] == [(10, 100), (20, 300), (30, 600), (40, 1_000)]
        # from T0 - ½ s: the first row at or after it is position 10, so 20 (stamped earlier) is inside
        since = T0 - timedelta(milliseconds=500)
        assert [r.position for r in view.list_entries(alice, since)] == [10, 20, 30, 40]
        assert [r.position for r in view.list_entries(alice, T0 + timedelta(microseconds=1))] == [30, 40]
        assert view.opening_balance(alice, T0 + timedelta(microseconds=1)) == 300
        for a, b in [(since, T0), (T0, T0 + timedelta(seconds=2)), (T0 - timedelta(seconds=1), T0)]:
            check_window(read_models, alice, a, b)

    def test_rebuild_from_zero_gives_identical_rows_to_the_live_ones(self, backend: Backend) -> None:
        ledger, read_models = backend
        accounts = [ledger.open_account(name) for name in ("alice", "bob")]
        read_models.runner.batch_size = 2  # the live rows come in many small batches
        for i in range(12):
            account = accounts[i % 2]
            ledger.grant(account, 1_000 + i)
            request_id = uuid4()
            ledger.hold(account, request_id, 100)
            ledger.settle(account, request_id, 10 * i)
            ledger.adjust(account, -3 if i % 3 else 4)
            if i % 4 == 0:
                read_models.runner.catch_up()
        read_models.runner.catch_up()
        live = all_entries(read_models, accounts)
        assert len(live) == 36

        read_models.runner.batch_size = 1000
        assert read_models.runner.rebuild("ledger_entries") == 36
        assert all_entries(read_models, accounts) == live
        read_models.runner.rebuild()
        assert all_entries(read_models, accounts) == live

    def test_the_same_batch_delivered_twice_adds_no_row(self, backend: Backend) -> None:
        ledger, read_models = backend
        alice = ledger.open_account("alice")
        for amount in (1, 2, 3, 4):
            ledger.grant(alice, amount)
        batch = ledger.recorder.select_notifications(None, 100)
        assert read_models.runner.apply("ledger_entries", batch[:3]) == 2
        assert read_models.runner.apply("ledger_entries", batch) == 2
        assert read_models.runner.apply("ledger_entries", batch) == 0
        assert read_models.runner.catch_up() > 0  # the other projections
        assert read_models.ledger is not None
        assert [(r.amount, r.balance) for r in read_models.ledger.list_entries(alice)] == [
            (1, 1),
            (2, 3),
            (3, 6),
            (4, 10),
        ]

    def test_a_batch_that_skips_movements_is_refused_and_nothing_is_written(self, backend: Backend) -> None:
        ledger, read_models = backend
        alice = ledger.open_account("alice")
        ledger.grant(alice, 1)
        ledger.grant(alice, 2)
        batch = ledger.recorder.select_notifications(None, 100)
        with pytest.raises(LookupError, match="not every notification after position 0 up to 3"):
            read_models.runner.apply("ledger_entries", batch[2:])  # the first grant is missing
        assert read_models.store.positions().get("ledger_entries", 0) == 0
        assert read_models.ledger is not None and read_models.ledger.list_entries(alice) == []
        read_models.runner.catch_up()
        assert [r.balance for r in read_models.ledger.list_entries(alice)] == [1, 3]

    def test_running_balances_are_exact_for_any_history(self, open_backend: OpenBackend) -> None:
        @settings(max_examples=self.history_examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(ops=operations, batch_size=st.integers(1, 7), data=st.data())
        def any_history(ops: list[tuple[str, int, int]], batch_size: int, data: st.DataObject) -> None:
            check_any_history(open_backend, ops, batch_size, data)

        any_history()


class TestInMemoryLedgerEntries(LedgerEntriesContract):
    @pytest.fixture
    def open_backend(self) -> OpenBackend:
        @contextmanager
        def open_() -> Iterator[Backend]:
            ledger = MovementsLedger(env=POPO)
            read_models = build_read_models(None, ledger)
            try:
                yield ledger, read_models
            finally:
                read_models.close()
                ledger.close()

        return open_


MODEL = "openai/gpt-test"
SHAPE = RequestShape(model=MODEL, prompt_bytes=200, max_output_tokens=100, choices=1, stream=False)


def test_the_real_ledgers_movements_reconcile_with_the_balance(ledger: Ledger, credits_billing: RequestBilling) -> None:
    """Grants, payments, billed requests, a failed one, adjustments and a payment refund,
    through the application services rather than a fake."""
    ProviderRegistry(ledger).register_provider(
        "openai", "openai", base_url="http://127.0.0.1:9/v1", region=None, secret="sk-test-secret-0001"
    )
    Prices(ledger).set_price(MODEL, price_from_credits(input="2", output="8"))
    Accounts(ledger).create_account("acme", starter_credits=NANO)
    key = ApiKeys(ledger).issue_api_key("acme").plaintext
    read_models = build_read_models(None, ledger)
    Accounts(ledger).grant_credits("acme", 2 * NANO, "top-up", idempotency_key="g-1")
    Accounts(ledger).grant_credits("acme", 2 * NANO, "top-up", idempotency_key="g-1")  # credited once
    Accounts(ledger).record_payment("acme", "pay_1", 3 * NANO)
    charges = []
    for tokens in (120, 400, 90):
        request = credits_billing.open_request(key, SHAPE)
        route = first_route(credits_billing, request)
        receipt = credits_billing.complete_request(
            request, route, Usage(input_tokens=tokens, output_tokens=30), ttfb_ms=1.0
        )
        charges.append((request.request_id, receipt.charge))
    failed = credits_billing.open_request(key, SHAPE)
    credits_billing.fail_request(failed, status=502, error_code="upstream_error")
    Accounts(ledger).adjust_credits("acme", -NANO // 2, "goodwill reversed")
    Accounts(ledger).reverse_payment("acme", "re_1", NANO, payment_id="pay_1")
    read_models.runner.catch_up()

    account = ledger.get_account("acme")
    assert read_models.ledger is not None
    rows = read_models.ledger.list_entries(account.id)
    assert [r.kind for r in rows] == [
        "grant",
        "grant",
        "grant",
        "charge",
        "charge",
        "charge",
        "adjustment",
        "adjustment",
    ]
    assert [(r.request_id, -r.amount) for r in rows if r.kind == "charge"] == charges
    assert all(charge > 0 for _, charge in charges)
    assert [r.idempotency_key for r in rows[:3]] == ["starter", "g-1", "pay_1"]
    assert rows[-1].reason == "payment refund re_1 of pay_1" and rows[-1].amount == -NANO
    check_running_balances(rows)
    balance = read_models.balances.get_balance(account.id)
    assert balance is not None and rows[-1].balance == account.balance == balance.balance
    assert sum(r.amount for r in rows) == (
        balance.granted_total - balance.charged_total + balance.refunded_total + balance.adjusted_total
    )
    read_models.runner.rebuild()
    assert read_models.ledger.list_entries(account.id) == rows
