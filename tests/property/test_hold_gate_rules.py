"""The hold gate never says yes to a hold the writer then refuses, whatever this process
does meanwhile: any sequence of holds, settlements, releases, grants (some expiring) and
clock advances, handed from the event loop to the real group-commit writer, with the loop
and the writer interleaving as they happen to. (What the gate cannot see — another
process's change — is the one way such a hold is refused: tests/unit/test_hold_gate.py.)"""

import asyncio
from datetime import timedelta
from uuid import uuid4

from hypothesis import given, settings
from hypothesis import strategies as st

from application.ledger import Ledger
from tests.fakes.clock import FakeClock
from tests.support.ledgers import saved, writing_ledger

amounts = st.integers(min_value=0, max_value=1_500)
holds = st.tuples(st.just("hold"), amounts)
operations = st.lists(
    st.one_of(
        holds,
        holds,
        holds,  # holds in flight together are what the gate must count
        st.tuples(st.just("settle"), st.integers(0, 20), st.integers(0, 700)),
        st.tuples(st.just("release"), st.integers(0, 20)),
        st.tuples(st.just("grant"), st.integers(1, 1_000), st.one_of(st.none(), st.integers(1, 120))),
        st.tuples(st.just("advance"), st.integers(1, 90)),
        st.tuples(st.just("pause"), st.integers(0, 3)),
    ),
    max_size=25,
)


@settings(max_examples=500, deadline=None)
@given(operations)
def test_a_hold_the_gate_admits_is_never_refused_by_the_writer(ops: list[tuple]) -> None:
    clock = FakeClock()
    with writing_ledger(clock) as (ledger, account_id):
        admitted = asyncio.run(_drive(ledger, clock, account_id, ops))
    for amount, outcome in admitted:
        assert outcome is True, f"a hold of {amount} the gate admitted was refused: {outcome!r}"


async def _drive(ledger: Ledger, clock: FakeClock, account_id, ops: list[tuple]) -> list[tuple[int, object]]:
    gate = ledger.hold_gate
    assert gate is not None
    admitted: list[tuple[int, asyncio.Future]] = []
    pending: list[asyncio.Future] = []
    held: list = []  # holds known to be durable and still open, by request id

    def change(apply):
        future = ledger.start_account_change(account_id, apply)
        pending.append(future)
        return future

    await change(lambda a: a.grant_credits(1_000, "opening") or [])  # saved by the writer: the gate knows acme
    for op in ops:
        now = clock.now()
        if op[0] == "hold":
            amount, request_id = op[1], uuid4()
            early = gate.admits(account_id, amount, now)
            durable = change(
                lambda a, r=request_id, n=now, x=amount: a.place_hold(r, x, n + timedelta(hours=1), now=n) or []
            )
            gate.track(account_id, amount, durable)
            durable.add_done_callback(lambda f, r=request_id: held.append(r) if saved(f) else None)
            if early:
                admitted.append((amount, durable))
        elif op[0] == "settle" and held:
            request_id = held.pop(op[1] % len(held))
            settled = change(lambda a, r=request_id, cost=op[2]: a.settle_hold(r, cost) and [] or [])
            gate.track(account_id, op[2], settled)  # as billing counts a settlement in flight
        elif op[0] == "release" and held:
            request_id = held.pop(op[1] % len(held))
            change(lambda a, r=request_id: a.release_hold(r, reason="test") or [])
        elif op[0] == "grant":
            expires = None if op[2] is None else now + timedelta(seconds=op[2])
            change(lambda a, x=expires, n=now, amount=op[1]: a.grant_credits(amount, "test", expires_at=x, now=n) or [])
        elif op[0] == "advance":
            clock.advance(seconds=op[1])
        elif op[0] == "pause":
            await asyncio.sleep(0.001 * op[1])  # the writer answers, the loop runs its callbacks
    await asyncio.gather(*pending, return_exceptions=True)
    return [(amount, _outcome(future)) for amount, future in admitted]


def _outcome(future: asyncio.Future) -> object:
    return future.exception() or future.result()
