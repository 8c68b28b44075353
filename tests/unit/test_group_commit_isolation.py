"""One command that breaks a group-commit batch's save fails alone: the other tenants'
holds and settlements of that batch are saved and answered as if it had never been sent."""

import asyncio
import threading
from datetime import timedelta
from uuid import uuid4

import pytest
from eventsourcing.domain import Aggregate

from adapters.http.errors import status_of
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.billing import RequestBilling, RequestShape
from application.ledger import Ledger
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from domain.errors import InsufficientCredits
from domain.pricing import price_usage, worst_case_usage
from domain.usage import Usage
from tests.support.routes import first_route

MODEL = "openai/gpt-test"
SHAPE = RequestShape(model=MODEL, prompt_bytes=200, max_output_tokens=100, choices=1, stream=False)
TENANTS = ("acme", "globex", "initech")


class Unencodable:
    """A value the event store's transcoder has no transcoding for."""


class Poison(Aggregate):
    """An aggregate whose first event the store cannot encode: saving it fails."""

    def __init__(self, value: object) -> None:
        self.value = value


class HeldWriter:
    """Keeps the writer busy in a batch of its own until ``release``, so that everything
    handed to it meanwhile forms its next batch."""

    def __init__(self, ledger: Ledger) -> None:
        self._busy, self._go = threading.Event(), threading.Event()
        blocker = Accounts(ledger).create_account(f"blocker-{uuid4().hex[:8]}").id
        self._thread = threading.Thread(target=ledger.change_account, args=(blocker, self._block))
        self._thread.start()
        assert self._busy.wait(5)
        self.batches_before = ledger.writer.batches

    def _block(self, _: object) -> list[object]:
        self._busy.set()
        self._go.wait(5)
        return []

    def release(self) -> None:
        self._go.set()
        self._thread.join(5)


@pytest.fixture
def tenants(ledger: Ledger, router) -> tuple[RequestBilling, dict[str, str], int]:
    ProviderRegistry(ledger).register_provider(
        "openai", "openai", base_url="http://127.0.0.1:9/v1", region=None, secret="sk-test-secret-0001"
    )
    Prices(ledger).set_price(MODEL, price_from_credits(input="2", output="8"))
    price = ledger.price_book().latest.price_for(MODEL)
    worst = price_usage(price, worst_case_usage(SHAPE.prompt_bytes, SHAPE.max_output_tokens, 1, price))
    keys = {}
    for name in TENANTS:
        Accounts(ledger).create_account(name, starter_credits=2 * worst)
        keys[name] = ApiKeys(ledger).issue_api_key(name).plaintext
    ledger.start_group_commit()
    yield (
        RequestBilling(
            ledger, router, mode="credits", hold_ttl=timedelta(minutes=15), status_of=status_of, early_upstream=False
        ),
        keys,
        worst,
    )
    ledger.stop_group_commit()


def test_a_command_the_store_cannot_save_fails_alone_and_its_batch_lands(ledger: Ledger, tenants) -> None:
    billing, keys, worst = tenants
    usage = Usage(input_tokens=50, output_tokens=20)
    cost = price_usage(ledger.price_book().latest.price_for(MODEL), usage)

    async def scenario() -> tuple[list[object], int]:
        served = await billing.open_request_async(keys["acme"], SHAPE)  # held before the batch
        held = HeldWriter(ledger)
        globex = ledger.get_account("globex").id
        poisoned = ledger.start_account_change(  # a real change of globex's, plus what cannot be stored
            globex, lambda account: account.grant_credits(1, reason="poisoned") or [Poison(Unencodable())]
        )
        batch = [
            billing.complete_request_async(served, first_route(billing, served), usage),  # acme's settlement
            billing.open_request_async(keys["globex"], SHAPE),  # the same tenant as the poisoned change
            billing.open_request_async(keys["initech"], SHAPE),
            billing.open_request_async(keys["initech"], SHAPE),
            billing.open_request_async(keys["initech"], SHAPE),  # beyond initech's credit once both others hold
        ]
        pending = [asyncio.ensure_future(c) for c in batch]
        while ledger.writer._queue.qsize() < len(batch) + 1:  # every command waits behind the busy writer
            await asyncio.sleep(0.001)
        held.release()
        outcomes = await asyncio.gather(poisoned, *pending, return_exceptions=True)
        return outcomes, ledger.writer.batches - held.batches_before

    outcomes, batches = asyncio.run(scenario())
    assert batches == 1  # they were all decided in one batch
    poisoned, settled, globex_hold, *initech = outcomes
    assert isinstance(poisoned, TypeError)  # the transcoder's refusal, to its own caller only
    assert settled.charge == cost
    assert globex_hold.hold == worst
    assert [type(o) for o in initech] == [type(globex_hold), type(globex_hold), InsufficientCredits]
    balances = {name: (ledger.get_account(name).balance, ledger.get_account(name).held) for name in TENANTS}
    assert balances == {"acme": (2 * worst - cost, 0), "globex": (2 * worst, worst), "initech": (2 * worst, 2 * worst)}
    reasons = [getattr(e, "reason", None) for e in ledger.events.get(ledger.get_account("globex").id)]
    assert "poisoned" not in reasons  # nothing of the bad command was saved


def test_a_refusal_is_decided_on_what_lands_not_on_a_command_that_failed(ledger: Ledger, tenants) -> None:
    """A hold refused on the state a poisoned command left would be a 402 for nothing: the
    batch is redone without it, and the hold is decided on what was really saved."""
    billing, keys, worst = tenants
    acme = ledger.get_account("acme").id

    async def scenario() -> list[object]:
        held = HeldWriter(ledger)
        spend = ledger.start_account_change(  # takes acme's whole credit, then cannot be saved
            acme, lambda account: account.adjust(-2 * worst, "spend it all") and [Poison(Unencodable())]
        )
        hold = asyncio.ensure_future(billing.open_request_async(keys["acme"], SHAPE))
        while ledger.writer._queue.qsize() < 2:
            await asyncio.sleep(0.001)
        held.release()
        return await asyncio.gather(spend, hold, return_exceptions=True)

    spend, hold = asyncio.run(scenario())
    assert isinstance(spend, TypeError)
    assert hold.hold == worst  # not InsufficientCredits
    assert (ledger.get_account("acme").balance, ledger.get_account("acme").held) == (2 * worst, worst)
