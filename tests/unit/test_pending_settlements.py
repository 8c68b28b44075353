"""A stream's settlement the store failed after its content was relayed (docs/reliability.md,
finding 4) is kept pending (application/pending_settlements.py) and saved once the store is
back: charged once, to the nanocredit, also when the failed save had landed after all (an
ambiguous commit); given up (logged with the request and the amount) once its hold's deadline
passes, the hold then released by the sweep and nothing charged; a plain answer's settlement
is not kept pending (its caller got a 503: its void is, test_store_unavailable_void.py); a
graceful shutdown gives the pending ones the grace left. The store is the real in-memory
ledger whose recorder fails the settlements' saves."""

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import OperationalError, StoredEvent

from adapters.http.chat import relay
from adapters.http.errors import status_of
from application.accounts import Accounts
from application.billing import RequestBilling
from application.calls import BilledCalls
from application.ledger import Ledger
from application.pending_settlements import PendingSettlements
from application.providers import ProviderRegistry
from application.shutdown import Shutdown
from application.streams import StreamMeter
from domain.account import Account
from domain.pricing import price_usage
from domain.usage import Usage
from tests.fakes.clock import FakeClock
from tests.fakes.provider import FakeProvider, StreamScript
from tests.unit.test_billed_call import World, world  # noqa: F401  (the fixture)
from tests.unit.test_metered_stream import OUTPUT, PROVIDER_USAGE, USAGE_CHUNK, chat_request, chunk, collect, start

GRANT = 10**15
FINISHED = StreamScript(batches=(*OUTPUT, (chunk(finish="stop"), USAGE_CHUNK)))


class FlakyStore:
    """The ledger's recorder, failing the saves that settle a hold as a store away does:
    ``refuse`` times before anything is written (``always``: every time); ``land`` times
    written and then reported failed (the commit landed, its answer was lost)."""

    def __init__(self, ledger: Ledger) -> None:
        self._insert = ledger.recorder.insert_events
        self.refuse = 0
        self.land = 0
        self.always = False
        self.failed = 0

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Any:
        if not any(event.topic.endswith(".HoldSettled") for event in stored_events):
            return self._insert(stored_events, **kwargs)
        if self.always or self.refuse:
            self.refuse = max(self.refuse - 1, 0)
            self.failed += 1
            raise OperationalError("database or disk is full")
        if self.land:
            self.land -= 1
            self.failed += 1
            self._insert(stored_events, **kwargs)
            raise OperationalError("server closed the connection unexpectedly")
        return self._insert(stored_events, **kwargs)


@pytest.fixture
def store(world: World, monkeypatch: pytest.MonkeyPatch) -> FlakyStore:  # noqa: F811
    flaky = FlakyStore(world.ledger)
    monkeypatch.setattr(world.ledger.recorder, "insert_events", flaky.insert_events)
    Accounts(world.ledger).grant_credits("acme", GRANT)
    return flaky


def billed_calls(
    world: World,  # noqa: F811
    pending: PendingSettlements,
    *,
    hold_ttl: timedelta = timedelta(minutes=15),
    shutdown: Shutdown | None = None,
) -> BilledCalls:
    billing = RequestBilling(world.ledger, world.router, mode="credits", hold_ttl=hold_ttl, status_of=status_of)
    provider = FakeProvider(stream=FINISHED)
    return BilledCalls(
        billing, world.router, {"openai": provider}, ProviderRegistry(world.ledger), shutdown=shutdown, pending=pending
    )


def quick() -> PendingSettlements:
    return PendingSettlements(first_wait=0.01, max_wait=0.05)


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll ``condition`` (bounded): the retries run on this loop."""
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


def settlements(ledger: Ledger, request_id: UUID) -> list[int]:
    """The amounts of every ``HoldSettled`` of ``request_id`` in the account's history."""
    account = ledger.get_account("acme")
    return [
        event.amount
        for event in ledger.events.get(account.id)
        if isinstance(event, Account.HoldSettled) and UUID(str(event.request_id)) == request_id
    ]


def held_for(ledger: Ledger, request_id: UUID) -> int:
    return ledger.get_account("acme").holds[request_id.hex].amount


def expected_charge(world: World, usage: Usage) -> int:  # noqa: F811
    price = world.ledger.price_book().latest.price_for("primary/gpt-test")
    assert price is not None
    return price_usage(price, usage)


def relayed_stream(calls: BilledCalls, world: World) -> tuple[UUID, list[Any]]:  # noqa: F811
    """Relay one stream whose settlement fails; the stream ends without its usage chunk. Then
    wait (bounded) until no settlement is pending any more."""
    chat = chat_request(include_usage=True)
    frames: list[Any] = []
    assert calls.pending is not None
    pending = calls.pending

    async def scenario() -> UUID:
        call = await start(calls, world.key, chat)
        pieces = relay(calls, call, chat)
        with pytest.raises(OperationalError):
            async for piece in pieces:
                frames.extend(await collect(_once(piece)))
        await until(lambda: pending.pending == 0)
        return call.opened.request_id

    return asyncio.run(scenario()), frames


async def _once(piece: bytes) -> AsyncIterator[bytes]:
    yield piece


def test_a_streams_settlement_the_store_refused_twice_lands_in_the_background_charged_once_to_the_nanocredit(
    world: World,  # noqa: F811
    store: FlakyStore,
) -> None:
    store.refuse = 3  # the settlement's own save, then two retries
    pending = quick()
    request_id, frames = relayed_stream(billed_calls(world, pending), world)

    charge = expected_charge(world, PROVIDER_USAGE)
    assert store.failed == 3 and pending.landed == 1 and pending.given_up == 0
    assert settlements(world.ledger, request_id) == [charge]
    assert world.account() == (GRANT - charge, 0)  # settled: nothing held
    record = world.record(request_id)
    assert record.details.charge == charge and record.details.status == 200
    assert record.details.usage == PROVIDER_USAGE
    # nothing durable when the stream ended: no usage chunk, no [DONE], no claimed cost
    assert "[DONE]" not in frames and not any(isinstance(f, dict) and f.get("usage") for f in frames)


def test_a_retry_after_a_save_that_had_landed_charges_nothing_more(
    world: World,  # noqa: F811
    store: FlakyStore,
) -> None:
    store.land = 1  # the settlement is written, its answer lost: the stream still ends without it
    pending = quick()
    request_id, _ = relayed_stream(billed_calls(world, pending), world)

    charge = expected_charge(world, PROVIDER_USAGE)
    assert store.failed == 1 and pending.landed == 1  # the retry found it settled already
    assert settlements(world.ledger, request_id) == [charge]
    assert world.account() == (GRANT - charge, 0)
    assert world.record(request_id).details.charge == charge


def test_a_settlement_still_failing_at_its_holds_deadline_is_given_up_logged_and_its_hold_released_by_the_sweep(
    world: World,  # noqa: F811
    store: FlakyStore,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="tallyhub.billing")
    store.always = True
    pending = quick()
    calls = billed_calls(world, pending, hold_ttl=timedelta(seconds=0.5))
    request_id, _ = relayed_stream(calls, world)

    charge = expected_charge(world, PROVIDER_USAGE)
    assert pending.landed == 0 and pending.given_up == 1 and store.failed >= 2
    given_up = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(given_up) == 1
    assert str(request_id) in given_up[0].getMessage() and f"({charge} nanocredits)" in given_up[0].getMessage()
    assert world.account() == (GRANT, held_for(world.ledger, request_id))  # still held, nothing charged
    clock.advance(seconds=1)
    assert Accounts(world.ledger).release_expired_holds("acme") == [request_id]
    store.always = False  # the store is back: nothing retries it any more
    assert world.account() == (GRANT, 0)
    assert settlements(world.ledger, request_id) == []
    assert world.record(request_id) is None


def test_a_plain_answers_settlement_the_store_refused_is_not_kept_pending_but_voided(
    world: World,  # noqa: F811
    store: FlakyStore,
) -> None:
    store.refuse = 1
    pending = quick()
    calls = billed_calls(world, pending)

    async def scenario() -> UUID:
        call = await start(calls, world.key, chat_request())
        with pytest.raises(OperationalError):
            await calls.complete(call, PROVIDER_USAGE, None)  # answered 503: nothing was delivered
        await until(lambda: pending.pending == 0)  # its void (application/voids.py), never its settlement
        return call.opened.request_id

    request_id = asyncio.run(scenario())
    assert pending.landed == 1 and pending.given_up == 0
    assert settlements(world.ledger, request_id) == []
    assert world.account() == (GRANT, 0)  # the hold released by the void, not left to the sweep


def test_a_graceful_stop_gives_pending_settlements_the_grace_left_and_gives_up_the_rest(
    world: World,  # noqa: F811
    store: FlakyStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="tallyhub.billing")
    pending = PendingSettlements(first_wait=0.05, max_wait=0.05)
    shutdown = Shutdown(grace_seconds=30)
    shutdown.pending = pending
    calls = billed_calls(world, pending, shutdown=shutdown)

    async def settled_at_stop(refuse: int, always: bool) -> UUID:
        store.refuse, store.always = refuse, always
        call = await start(calls, world.key, chat_request())
        meter = StreamMeter(calls, call)
        meter.usage = PROVIDER_USAGE
        with pytest.raises(OperationalError):
            await meter.finished()
        assert pending.pending == 1
        if always:
            shutdown.grace_seconds = 0.2
            shutdown.begin()  # the drain began; its grace runs out with the store still away
        await shutdown.stopped()
        assert pending.pending == 0
        return call.opened.request_id

    landed = asyncio.run(settled_at_stop(refuse=2, always=False))
    charge = expected_charge(world, PROVIDER_USAGE)
    assert settlements(world.ledger, landed) == [charge] and pending.landed == 1

    lost = asyncio.run(settled_at_stop(refuse=0, always=True))
    assert pending.given_up == 1 and settlements(world.ledger, lost) == []
    assert any(str(lost) in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    assert world.account() == (GRANT - charge, held_for(world.ledger, lost))  # the lost one's hold: the sweep's


def test_only_the_store_away_is_retried() -> None:
    assert PendingSettlements.transient(OperationalError("database or disk is full"))
    assert not PendingSettlements.transient(ValueError("a bug"))
