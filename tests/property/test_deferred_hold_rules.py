"""A deferred hold (a whole answer's, application/hold_gate.py) is placed by its request's
closing change, long after the gate admitted it; meanwhile this process keeps deciding other
holds. Whatever it does in between — holds saved first (early or not), settlements within
their holds, releases, grants (some expiring), clock advances — a deferred hold the gate
admitted is never refused when it is placed, nor is an early hold the gate admitted, and the
account never goes below zero. (A settlement charging more than its hold may take a deferred
hold's credit: the one case of this process's own the module docstring leaves out.)"""

import asyncio
from datetime import datetime, timedelta
from uuid import UUID, uuid4

from hypothesis import given, settings
from hypothesis import strategies as st

from application.hold_gate import HoldGate, Reservation
from application.ledger import Ledger
from domain.account import Account
from domain.errors import InsufficientCredits
from tests.fakes.clock import FakeClock
from tests.support.ledgers import saved, writing_ledger

LIFETIME = timedelta(seconds=60)  # the holds' time to live: a deadline within it stops deferral
amounts = st.integers(min_value=0, max_value=1_500)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("defer"), amounts),
        st.tuples(st.just("defer"), amounts),
        st.tuples(st.just("hold"), amounts),
        st.tuples(st.just("settle"), st.integers(0, 20), st.integers(0, 100)),  # percent of its hold
        st.tuples(st.just("release"), st.integers(0, 20)),
        st.tuples(st.just("grant"), st.integers(1, 1_000), st.one_of(st.none(), st.integers(1, 120))),
        st.tuples(st.just("advance"), st.integers(1, 90)),
        st.tuples(st.just("pause"), st.integers(0, 3)),
    ),
    max_size=30,
)


class _Open:
    """A hold placed (saved first) or deferred, not yet closed."""

    def __init__(self, amount: int, at: datetime, reservation: Reservation | None = None) -> None:
        self.request_id: UUID = uuid4()
        self.amount, self.at, self.reservation = amount, at, reservation


@settings(max_examples=400, deadline=None)
@given(operations)
def test_no_hold_the_gate_admits_or_defers_is_refused_and_no_account_goes_below_zero(ops: list[tuple]) -> None:
    clock = FakeClock()
    with writing_ledger(clock) as (ledger, account_id):
        refusals = asyncio.run(_drive(ledger, clock, account_id, ops))
        account = ledger.get_account(account_id)
    assert refusals == [], f"admitted holds refused: {refusals}"
    assert account.balance >= 0 and account.available >= 0 and account.held >= 0


async def _drive(ledger: Ledger, clock: FakeClock, account_id: UUID, ops: list[tuple]) -> list[object]:
    gate = ledger.hold_gate
    assert gate is not None
    refusals: list[object] = []
    pending: list[asyncio.Future[bool]] = []
    held: list[_Open] = []  # saved first and durable
    deferred: list[_Open] = []

    def change(apply, admitted: bool = False) -> asyncio.Future[bool]:
        future = ledger.start_account_change(account_id, apply)
        pending.append(future)
        if admitted:
            future.add_done_callback(lambda f: refusals.append(f.exception()) if f.exception() else None)
        return future

    await change(lambda a: a.grant_credits(1_000, "opening") or [])  # saved by the writer: the gate knows acme
    for op in ops:
        now = clock.now()
        if op[0] == "defer":
            reservation = gate.defers(account_id, op[1], now, LIFETIME)
            if reservation is not None:
                deferred.append(_Open(op[1], now, reservation))
                continue
        if op[0] in ("defer", "hold"):  # saved first, as billing does when a hold is not deferred
            opened = _Open(op[1], now)
            durable = change(_hold(gate, opened), admitted=gate.admits(account_id, op[1], now))
            gate.track(account_id, op[1], durable)
            durable.add_done_callback(lambda f, o=opened: held.append(o) if saved(f) else None)
        elif op[0] in ("settle", "release") and (held or deferred):
            both = held + deferred
            closing = both[op[1] % len(both)]
            (held if closing in held else deferred).remove(closing)
            cost = closing.amount * op[2] // 100 if op[0] == "settle" else None
            closed = change(_close(gate, closing, cost), admitted=closing.reservation is not None)
            if cost:
                gate.track(account_id, cost, closed)
        elif op[0] == "grant":
            expires = None if op[2] is None else now + timedelta(seconds=op[2])
            change(lambda a, x=expires, n=now, amount=op[1]: a.grant_credits(amount, "test", expires_at=x, now=n) or [])
        elif op[0] == "advance":
            clock.advance(seconds=op[1])
        elif op[0] == "pause":
            await asyncio.sleep(0.001 * op[1])  # the writer answers, the loop runs its callbacks
    for closing in deferred:  # every request closes: the rest are released
        change(_close(gate, closing, None), admitted=True)
    await asyncio.gather(*pending, return_exceptions=True)
    return refusals


def _hold(gate: HoldGate, opened: _Open):
    """The hold change as billing hands it to the writer: what deferred holds reserve is taken."""

    def hold(account: Account) -> list[object]:
        if not gate.leaves_room(account, opened.amount, opened.at):
            raise InsufficientCredits(account.id, needed=opened.amount, available=account.available)
        account.place_hold(opened.request_id, opened.amount, opened.at + LIFETIME, now=opened.at)
        return []

    return hold


def _close(gate: HoldGate, closing: _Open, cost: int | None):
    """The closing change: a deferred hold is placed first (its reservation released), then
    settled for ``cost`` or, with None, released."""

    def close(account: Account) -> list[object]:
        if closing.reservation is not None:
            closing.reservation.release()
            _hold(gate, closing)(account)
        if cost is None:
            account.release_hold(closing.request_id, reason="test")
        else:
            account.settle_hold(closing.request_id, cost)
        return []

    return close
