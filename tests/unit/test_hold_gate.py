"""The hold gate: an upstream call starts before its hold is saved only when this process
knows the hold fits; every hold is still decided by the writer, and one refused after all
is recorded and charges nothing. A whole answer's admitted hold is deferred: placed by its
settlement (or release), in that one transaction, and what it reserves meanwhile no other
hold of this process may take."""

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from uuid import UUID, uuid4

import pytest

from adapters.http.errors import status_of
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.billing import Receipt, RequestBilling, RequestShape
from application.hold_gate import HoldGate
from application.ledger import Ledger
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from domain.errors import InsufficientCredits
from domain.pricing import price_usage, worst_case_usage
from domain.usage import Usage
from tests.fakes.clock import FakeClock
from tests.support.routes import first_route

MODEL = "openai/gpt-test"
SHAPE = RequestShape(model=MODEL, prompt_bytes=200, max_output_tokens=100, choices=1, stream=False)
STREAM = replace(SHAPE, stream=True)  # relayed as it comes: its hold is saved before the first byte
NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)
LIFETIME = timedelta(minutes=15)  # a hold's time to live


def account(available: int, next_expiry: datetime | None = None, capped: bool = False) -> SimpleNamespace:
    return SimpleNamespace(id=uuid4(), available=available, next_expiry=next_expiry, has_spend_caps=capped)


def test_the_gate_admits_only_what_a_saved_account_has_room_for() -> None:
    gate, known = HoldGate(), account(100)
    assert not gate.admits(known.id, 1, NOW)  # never saved by the writer: nothing is known
    gate.saved([known])
    assert gate.admits(known.id, 100, NOW) and not gate.admits(known.id, 101, NOW)
    gate.forget([known.id])  # a refused batch: what was known is no longer trusted
    assert not gate.admits(known.id, 1, NOW)


def test_the_gate_knows_nothing_of_capped_accounts_or_past_a_grant_deadline() -> None:
    gate = HoldGate()
    capped, expiring = account(100, capped=True), account(100, next_expiry=NOW + timedelta(minutes=1))
    gate.saved([capped, expiring])
    assert not gate.admits(capped.id, 1, NOW)
    assert gate.admits(expiring.id, 1, NOW)
    assert not gate.admits(expiring.id, 1, NOW + timedelta(minutes=1))


def test_the_gate_counts_holds_in_flight_until_the_writer_answers_for_them() -> None:
    async def scenario() -> None:
        gate, known = HoldGate(), account(100)
        gate.saved([known])
        first, second = asyncio.get_running_loop().create_future(), asyncio.get_running_loop().create_future()
        gate.track(known.id, 60, first)
        gate.track(known.id, 30, second)
        assert gate.admits(known.id, 10, NOW) and not gate.admits(known.id, 11, NOW)
        first.set_exception(InsufficientCredits(known.id, needed=60, available=0))  # refused: no longer in flight
        second.set_result(True)
        await asyncio.sleep(0)  # the done-callbacks run
        assert gate.admits(known.id, 100, NOW)

    asyncio.run(scenario())


def test_a_deferred_hold_reserves_its_amount_until_released_once() -> None:
    gate, known = HoldGate(), account(100)
    gate.saved([known])
    reservation = gate.defers(known.id, 60, NOW, LIFETIME)
    assert reservation is not None and gate.reserved(known.id) == 60
    assert gate.admits(known.id, 40, NOW) and not gate.admits(known.id, 41, NOW)
    assert gate.defers(known.id, 41, NOW, LIFETIME) is None  # past the room: saved first, if it fits at all
    reservation.release()
    reservation.release()  # the backstop after the closing change: nothing more is given back
    assert gate.reserved(known.id) == 0 and gate.admits(known.id, 100, NOW)


def test_no_hold_is_deferred_across_a_grant_deadline_within_its_lifetime() -> None:
    gate, expiring = HoldGate(), account(100, next_expiry=NOW + LIFETIME)
    gate.saved([expiring])
    assert gate.defers(expiring.id, 1, NOW, LIFETIME) is None  # the expiry could take its credit meanwhile
    assert gate.admits(expiring.id, 1, NOW)  # it may still start early, its hold saved first
    assert gate.defers(expiring.id, 1, NOW - timedelta(seconds=1), LIFETIME) is not None


@pytest.fixture
def served(ledger: Ledger, router) -> Iterator[tuple[Ledger, RequestBilling, str, int]]:
    ProviderRegistry(ledger).register_provider(
        "openai", "openai", base_url="http://127.0.0.1:9/v1", region=None, secret="sk-test-secret-0001"
    )
    Prices(ledger).set_price(MODEL, price_from_credits(input="2", output="8"))
    Accounts(ledger).create_account("acme")
    key = ApiKeys(ledger).issue_api_key("acme").plaintext
    price = ledger.price_book().latest.price_for(MODEL)
    worst = price_usage(price, worst_case_usage(SHAPE.prompt_bytes, SHAPE.max_output_tokens, 1, price))
    ledger.start_group_commit()
    yield (
        ledger,
        RequestBilling(ledger, router, mode="credits", hold_ttl=timedelta(minutes=15), status_of=status_of),
        key,
        worst,
    )
    ledger.stop_group_commit()


class BusyWriter:
    """Keeps the ledger's writer inside a batch of its own until ``release``."""

    def __init__(self, ledger: Ledger) -> None:
        self._busy, self._go = threading.Event(), threading.Event()
        account_id = ledger.get_account("acme").id
        self._thread = threading.Thread(target=ledger.change_account, args=(account_id, self._block))
        self._thread.start()
        assert self._busy.wait(5)

    def _block(self, _: object) -> list[object]:
        self._busy.set()
        self._go.wait(5)
        return []

    def release(self) -> None:
        self._go.set()
        self._thread.join(5)


def test_a_hold_the_gate_knows_fits_lets_the_call_start_before_it_is_saved(served) -> None:
    ledger, billing, key, worst = served
    Accounts(ledger).grant_credits("acme", 2 * worst)  # saved by the writer: the gate now knows the room
    writer = BusyWriter(ledger)  # so no hold is saved (nor answered) while the three open

    async def scenario() -> None:
        opened = [await billing.open_request_async(key, STREAM, request_id=uuid4()) for _ in range(2)]
        assert all(o.hold_durable is not None for o in opened)  # both may call upstream already
        third = asyncio.ensure_future(billing.open_request_async(key, STREAM, request_id=uuid4()))
        await asyncio.sleep(0.05)
        assert not third.done()  # past the known room: it waits for the writer's decision
        writer.release()
        for o in opened:
            await billing.confirm_hold(o)
        with pytest.raises(InsufficientCredits):
            await third

    asyncio.run(scenario())
    account_state = ledger.get_account("acme")
    assert (account_state.balance, account_state.held) == (2 * worst, 2 * worst)


def test_without_early_upstream_every_call_waits_for_its_durable_hold(served, router) -> None:
    ledger, _, key, worst = served
    Accounts(ledger).grant_credits("acme", 2 * worst)
    strict = RequestBilling(
        ledger, router, mode="credits", hold_ttl=timedelta(minutes=15), status_of=status_of, early_upstream=False
    )

    async def scenario() -> None:
        opened = await strict.open_request_async(key, SHAPE)
        assert opened.hold_durable is None
        assert ledger.get_account("acme").held == worst  # durable before the call may start

    asyncio.run(scenario())


def test_a_hold_refused_after_its_call_started_is_recorded_and_charges_nothing(served, clock: FakeClock) -> None:
    """A debit the gate was not told of (here: handed to the writer from another thread)
    lands between the gate's yes and the hold: the writer refuses the hold."""
    ledger, billing, key, worst = served
    Accounts(ledger).grant_credits("acme", worst)
    writer = BusyWriter(ledger)
    debit = threading.Thread(target=Accounts(ledger).adjust_credits, args=("acme", -worst, "operator debit"))
    debit.start()
    while ledger.writer._queue.qsize() < 1:
        threading.Event().wait(0.001)  # the debit is queued first

    async def scenario() -> None:
        opened = await billing.open_request_async(key, STREAM)
        assert opened.hold_durable is not None  # the gate said yes: the call may start now
        writer.release()
        with pytest.raises(InsufficientCredits):
            await billing.confirm_hold(opened)
        record = ledger.find(opened.request_id)
        assert (record.details.status, record.details.error_code) == (402, "insufficient_credits")
        assert record.details.charge == 0

    asyncio.run(scenario())
    debit.join(5)
    account_state = ledger.get_account("acme")
    assert (account_state.balance, account_state.held) == (0, 0)


def test_a_settlement_in_flight_counts_its_whole_cost_against_the_known_room(served) -> None:
    """A provider may report more than the worst case: until the writer has answered for
    the settlement, the room it may take is not offered to a new request."""
    ledger, billing, key, worst = served
    Accounts(ledger).grant_credits("acme", 2 * worst)

    async def scenario() -> None:
        first = await billing.open_request_async(key, SHAPE, request_id=uuid4())
        await billing.confirm_hold(first)
        writer = BusyWriter(ledger)
        # costs 1.5 worst cases: input beyond the body's bytes, within what a provider may add to a
        # prompt, all of it 1-hour cache writes (the dearest input class the hold covers, 2 × input)
        overrun = Usage(input_tokens=400, cache_write_1h_tokens=400, output_tokens=100)
        settling = asyncio.ensure_future(billing.complete_request_async(first, first_route(billing, first), overrun))
        await asyncio.sleep(0)  # the settlement is handed to the busy writer
        second = asyncio.ensure_future(billing.open_request_async(key, SHAPE, request_id=uuid4()))
        await asyncio.sleep(0.05)
        assert not second.done()  # not admitted on the room the overrun will take: it waits
        writer.release()
        assert (await settling).charge == 3 * worst // 2
        with pytest.raises(InsufficientCredits):  # refused before any upstream call
            await second

    asyncio.run(scenario())
    account_state = ledger.get_account("acme")
    assert (account_state.balance, account_state.held) == (worst // 2, 0)


def test_a_whole_answers_admitted_hold_is_placed_by_its_settlement_in_one_transaction(served) -> None:
    ledger, billing, key, worst = served
    Accounts(ledger).grant_credits("acme", 2 * worst)  # saved by the writer: the gate knows the room
    writer = ledger.writer
    assert writer is not None
    usage = Usage(input_tokens=50, output_tokens=20)

    async def scenario() -> tuple[Receipt, int, int]:
        before = (writer.batches, writer.commands)
        opened = await billing.open_request_async(key, SHAPE, request_id=uuid4())
        assert opened.deferred_hold is not None and opened.hold_durable is None
        assert (writer.batches, writer.commands) == before  # nothing handed to the writer yet
        await billing.confirm_hold(opened)  # nothing to wait for
        receipt = await billing.complete_request_async(opened, first_route(billing, opened), usage)
        return receipt, writer.batches - before[0], writer.commands - before[1]

    receipt, batches, commands = asyncio.run(scenario())
    assert (batches, commands) == (1, 1)  # the hold, its settlement and the record: one commit
    price = ledger.price_book().latest.price_for(MODEL)
    assert receipt.charge == price_usage(price, usage)
    account_state = ledger.get_account("acme")
    assert (account_state.balance, account_state.held) == (2 * worst - receipt.charge, 0)
    assert _account_events(ledger)[-2:] == ["HoldPlaced", "HoldSettled"]  # as for a hold saved first
    record = ledger.find(receipt.request_id)
    assert (record.details.status, record.details.charge, record.details.hold) == (200, receipt.charge, worst)


def test_a_whole_answers_failure_places_and_releases_its_deferred_hold_in_one_transaction(served) -> None:
    ledger, billing, key, worst = served
    Accounts(ledger).grant_credits("acme", worst)

    async def scenario() -> UUID:
        opened = await billing.open_request_async(key, SHAPE, request_id=uuid4())
        assert opened.deferred_hold is not None
        await billing.fail_request_async(opened, status=502, error_code="upstream_error", route=None)
        return opened.request_id

    request_id = asyncio.run(scenario())
    assert _account_events(ledger)[-2:] == ["HoldPlaced", "HoldReleased"]
    account_state = ledger.get_account("acme")
    assert (account_state.balance, account_state.held) == (worst, 0)
    assert (ledger.find(request_id).details.status, ledger.find(request_id).details.charge) == (502, 0)


def test_a_deferred_hold_refused_at_its_settlement_is_recorded_and_charges_nothing(served) -> None:
    """A debit the gate was not told of lands while the call runs: the hold, placed with the
    settlement, no longer fits. The settlement records the refusal instead and raises it."""
    ledger, billing, key, worst = served
    Accounts(ledger).grant_credits("acme", worst)

    async def scenario() -> UUID:
        opened = await billing.open_request_async(key, SHAPE, request_id=uuid4())
        assert opened.deferred_hold is not None  # the gate said yes
        debit = threading.Thread(target=Accounts(ledger).adjust_credits, args=("acme", -worst, "operator debit"))
        debit.start()
        debit.join(5)
        with pytest.raises(InsufficientCredits):
            await billing.complete_request_async(opened, first_route(billing, opened), Usage(10, 5))
        return opened.request_id

    request_id = asyncio.run(scenario())
    record = ledger.find(request_id)
    assert (record.details.status, record.details.error_code, record.details.charge) == (402, "insufficient_credits", 0)
    assert record.details.provider == "openai"  # the call it abandons, for reconciliation
    account_state = ledger.get_account("acme")
    assert (account_state.balance, account_state.held) == (0, 0)
    assert "HoldPlaced" not in _account_events(ledger)


def test_a_hold_decided_while_a_deferred_hold_is_reserved_cannot_take_its_credit(served) -> None:
    """Room for two worst cases: a whole answer's hold is deferred, a stream's is admitted
    early and saved; a third request the gate does not admit goes to the writer, which counts
    the deferred hold as held and refuses it, so the deferred hold is placed as admitted."""
    ledger, billing, key, worst = served
    Accounts(ledger).grant_credits("acme", 2 * worst)

    async def scenario() -> Receipt:
        deferred = await billing.open_request_async(key, SHAPE, request_id=uuid4())
        assert deferred.deferred_hold is not None
        stream = await billing.open_request_async(key, STREAM, request_id=uuid4())
        await billing.confirm_hold(stream)
        assert ledger.get_account("acme").available == worst  # what the store shows: room for one more
        with pytest.raises(InsufficientCredits):  # but that room is the deferred hold's
            await billing.open_request_async(key, STREAM, request_id=uuid4())
        return await billing.complete_request_async(deferred, first_route(billing, deferred), Usage(10, 5))

    receipt = asyncio.run(scenario())
    account_state = ledger.get_account("acme")
    assert (account_state.balance, account_state.held) == (2 * worst - receipt.charge, worst)


def _account_events(ledger: Ledger) -> list[str]:
    """The class names of the account's stored events, oldest first."""
    account_id = ledger.get_account("acme").id
    return [event.topic.rpartition(".")[2] for event in ledger.recorder.select_events(account_id)]
