"""Grant expiry in the read models: the balances view follows ``GrantExpired`` (balance,
``expired_total``, the grants the sweep still has to expire) and the ledger entries show
each expiry as a negative ``expiry`` row. ``GrantExpiryViewsContract`` runs here in
memory and, in tests/integration/projections/test_grant_expiry_sql.py, on SQLite and
PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from projections.read_models import ReadModels, build_read_models
from tests.unit.projections.projection_contract import T0, FakeLedger

POPO = {"PERSISTENCE_MODULE": "eventsourcing.popo"}


class ExpiryLedger(FakeLedger):
    """FakeLedger plus expiring grants and their deadlines."""

    def grant_expiring(self, account_id: UUID, amount: int, expires_at: datetime) -> int:
        account = self.repository.get(account_id)
        account.grant_credits(amount, reason="promo", expires_at=expires_at)
        self.save(account)
        return account.version

    def expire(self, account_id: UUID, now: datetime) -> list[int]:
        account = self.repository.get(account_id)
        expired = account.expire_grants(now)
        self.save(account)
        return expired


def expiry_history(ledger: ExpiryLedger) -> dict[str, Any]:
    """alice: a deadline meets a hold (part expires at once, the rest when the hold
    closes), then a second deadline; bob: a grant past its deadline, not swept yet."""
    alice, bob = ledger.open_account("alice"), ledger.open_account("bob")
    ledger.grant(alice, 1_000)
    first = ledger.grant_expiring(alice, 500, T0 + timedelta(hours=1))
    second = ledger.grant_expiring(alice, 300, T0 + timedelta(hours=2))
    request = uuid4()
    ledger.hold(alice, request, 1_700)
    assert ledger.expire(alice, T0 + timedelta(hours=1)) == [first]  # 100 expires, the hold keeps 400
    assert ledger.settle(alice, request, 250) == 250  # spent from what it kept; the other 150 expires
    assert ledger.expire(alice, T0 + timedelta(hours=2)) == [second]
    unswept = ledger.grant_expiring(bob, 50, T0 + timedelta(hours=1))
    return {"alice": alice, "bob": bob, "request": request, "unswept": unswept}


class GrantExpiryViewsContract:
    @pytest.fixture
    def read_models(self, make_read_models: Callable[[], ReadModels]) -> ReadModels:
        return make_read_models()

    def test_the_balances_view_equals_the_account_and_counts_what_expired(
        self, ledger: ExpiryLedger, read_models: ReadModels
    ) -> None:
        ids = expiry_history(ledger)
        read_models.runner.catch_up()
        account = ledger.account(ids["alice"])
        row = read_models.balances.get_balance(account.id)
        assert row is not None
        assert (row.balance, row.held, row.available) == (account.balance, account.held, account.available)
        assert (row.balance, row.expired_total) == (1_000, 100 + 150 + 300)
        assert row.balance == (
            row.granted_total - row.charged_total + row.refunded_total + row.adjusted_total - row.expired_total
        )
        assert [b.expired_total for b in read_models.balances.list_balances()] == [550, 0]

    def test_due_grants_are_those_past_their_deadline_whose_expiry_is_not_applied_yet(
        self, ledger: ExpiryLedger, read_models: ReadModels
    ) -> None:
        ids = expiry_history(ledger)
        read_models.runner.catch_up()
        assert read_models.balances.list_due_grants(T0) == []
        due = read_models.balances.list_due_grants(T0 + timedelta(hours=3))
        assert [(g.account_id, g.grant, g.amount, g.expires_at, g.expired, g.expired_at) for g in due] == [
            (ids["bob"], ids["unswept"], 50, T0 + timedelta(hours=1), 0, None)
        ]
        ledger.expire(ids["bob"], T0 + timedelta(hours=3))
        read_models.runner.catch_up()
        assert read_models.balances.list_due_grants(T0 + timedelta(hours=3)) == []
        bob = read_models.balances.get_balance(ids["bob"])
        assert bob is not None and (bob.balance, bob.expired_total) == (0, 50)

    def test_each_expiry_is_a_negative_expiry_entry_and_the_running_balance_ends_at_the_balance(
        self, ledger: ExpiryLedger, read_models: ReadModels
    ) -> None:
        ids = expiry_history(ledger)
        read_models.runner.catch_up()
        assert read_models.ledger is not None
        rows = read_models.ledger.list_entries(ids["alice"])
        assert [(r.kind, r.amount, r.request_id) for r in rows] == [
            ("grant", 1_000, None),
            ("grant", 500, None),
            ("grant", 300, None),
            ("expiry", -100, None),
            ("charge", -250, ids["request"]),
            ("expiry", -150, ids["request"]),
            ("expiry", -300, None),
        ]
        assert [r.balance for r in rows][-4:] == [1_700, 1_450, 1_300, 1_000]
        assert rows[-1].balance == ledger.account(ids["alice"]).balance
        assert all(r.reason and r.reason.startswith("grant ") for r in rows if r.kind == "expiry")

    def test_a_rebuild_and_one_event_per_batch_give_the_same_views(
        self, ledger: ExpiryLedger, make_read_models: Callable[[], ReadModels]
    ) -> None:
        read_models = make_read_models()
        read_models.runner.batch_size = 1
        ids = expiry_history(ledger)
        read_models.runner.catch_up()
        live = views_of(read_models, ids)
        read_models.runner.batch_size = 1000
        read_models.runner.rebuild()
        assert views_of(read_models, ids) == live


def views_of(read_models: ReadModels, ids: dict[str, Any]) -> dict[str, Any]:
    assert read_models.ledger is not None
    return {
        "balances": read_models.balances.list_balances(),
        "due": read_models.balances.list_due_grants(T0 + timedelta(days=1)),
        "entries": [read_models.ledger.list_entries(ids[name]) for name in ("alice", "bob")],
    }


class TestGrantExpiryInMemory(GrantExpiryViewsContract):
    @pytest.fixture
    def ledger(self) -> Iterator[ExpiryLedger]:
        app = ExpiryLedger(env=POPO)
        yield app
        app.close()

    @pytest.fixture
    def make_read_models(self, ledger: ExpiryLedger) -> Callable[[], ReadModels]:
        return lambda: build_read_models(None, ledger)
