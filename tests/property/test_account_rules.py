"""Any sequence of grants, holds, settlements, releases, late charges, refunds,
adjustments and expiry sweeps keeps the account's invariants:
balance = grants − charges + refunds ± adjustments, available = balance − open holds ≥ 0,
and each request is charged at most once."""

from datetime import datetime, timedelta, timezone
from uuid import UUID, uuid4

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from domain.account import Account
from domain.errors import AlreadyExists, HoldNotFound, InsufficientCredits, InvalidRequest

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
amounts = st.integers(min_value=0, max_value=10**12)


class AccountMachine(RuleBasedStateMachine):
    requests = Bundle("requests")

    def __init__(self) -> None:
        super().__init__()
        self.account = Account(name="acme")
        self.granted = 0
        self.charged = 0
        self.refunded = 0
        self.adjusted = 0
        self.charged_requests: set[UUID] = set()
        self.open: dict[UUID, int] = {}

    @rule(amount=st.integers(min_value=1, max_value=10**12))
    def grant(self, amount: int) -> None:
        self.account.grant_credits(amount, reason="test")
        self.granted += amount

    @rule(amount=st.integers(max_value=0))
    def non_positive_grant_is_refused(self, amount: int) -> None:
        with pytest.raises(InvalidRequest):
            self.account.grant_credits(amount, reason="test")

    @rule(target=requests, amount=amounts)
    def place_hold(self, amount: int) -> UUID:
        request_id = uuid4()
        available = self.account.available
        if amount > available:
            with pytest.raises(InsufficientCredits):
                self.account.place_hold(request_id, amount, NOW + timedelta(minutes=5))
        else:
            self.account.place_hold(request_id, amount, NOW + timedelta(minutes=5))
            self.open[request_id] = amount
        return request_id

    @rule(request_id=requests)
    def second_hold_for_the_same_request_is_refused(self, request_id: UUID) -> None:
        if request_id in self.open:
            with pytest.raises(AlreadyExists):
                self.account.place_hold(request_id, 0, NOW)

    @rule(request_id=consumes(requests), cost=amounts)
    def settle(self, request_id: UUID, cost: int) -> None:
        if request_id not in self.open:
            with pytest.raises(HoldNotFound):
                self.account.settle_hold(request_id, cost)
            return
        before = self.account.balance
        charged = self.account.settle_hold(request_id, cost)
        assert 0 <= charged <= cost
        assert charged == cost or self.account.available == 0  # capped only when the account is exhausted
        assert before - self.account.balance == charged
        self._charged(request_id, charged)
        del self.open[request_id]

    @rule(request_id=consumes(requests))
    def release(self, request_id: UUID) -> None:
        if request_id not in self.open:
            with pytest.raises(HoldNotFound):
                self.account.release_hold(request_id, reason="upstream failed")
            return
        before = self.account.balance
        self.account.release_hold(request_id, reason="upstream failed")
        assert self.account.balance == before
        del self.open[request_id]

    @rule(cost=amounts)
    def late_charge_after_expiry(self, cost: int) -> None:
        request_id = uuid4()
        available = self.account.available
        charged = self.account.charge_without_hold(request_id, cost)
        assert charged == min(cost, available)
        self._charged(request_id, charged)

    @rule(amount=st.integers(min_value=-(10**12), max_value=10**12).filter(bool))
    def adjust(self, amount: int) -> None:
        available = self.account.available
        applied = self.account.adjust(amount, reason="correction")
        assert applied == (amount if amount > 0 else -min(-amount, available))
        self.adjusted += applied

    @rule(amount=st.integers(min_value=1, max_value=10**12))
    def refund_a_charge(self, amount: int) -> None:
        self.account.refund_charge(uuid4(), amount, reason="bad answer")
        self.refunded += amount

    @rule()
    def sweep_expired_holds(self) -> None:
        released = self.account.release_expired_holds(NOW + timedelta(minutes=10))
        assert set(released) == set(self.open)
        self.open.clear()

    @rule()
    def expired_holds_are_found(self) -> None:
        assert set(self.account.expired_holds(NOW + timedelta(minutes=10))) == set(self.open)
        assert self.account.expired_holds(NOW) == []

    def _charged(self, request_id: UUID, amount: int) -> None:
        assert request_id not in self.charged_requests
        self.charged_requests.add(request_id)
        self.charged += amount

    @invariant()
    def balance_is_grants_minus_charges_plus_refunds_plus_adjustments(self) -> None:
        assert self.account.balance == self.granted - self.charged + self.refunded + self.adjusted

    @invariant()
    def available_is_balance_minus_open_holds_and_never_negative(self) -> None:
        assert self.account.held == sum(self.open.values())
        assert self.account.available == self.account.balance - self.account.held
        assert self.account.available >= 0

    @invariant()
    def replaying_the_events_gives_the_same_state(self) -> None:
        pending = self.account.pending_events
        copy = None
        for domain_event in pending:
            copy = domain_event.mutate(copy)
        assert copy is not None
        assert (copy.balance, copy.holds) == (self.account.balance, self.account.holds)


AccountMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestAccountRules = AccountMachine.TestCase
