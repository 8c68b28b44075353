"""Group commit keeps the ledger's rules: many threads on two ledgers (two "processes")
sharing one store, each ledger with its own writer, never overdraw, charge each
request once (holds deferred to their settlement included), and batches really hold many
commands."""

import asyncio
import os
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from adapters.crypto.aes_gcm import AesGcmKeyVault
from adapters.crypto.key_digest import HmacApiKeyScheme
from adapters.http.errors import status_of
from adapters.settings import parse_database_url
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.billing import RequestBilling, RequestShape
from application.health import CredentialHealth
from application.ledger import Ledger
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from application.routing import Router
from domain.errors import InsufficientCredits
from domain.pricing import ModelPrice, price_usage, worst_case_usage
from domain.usage import Usage
from tests.conftest import PgSchemas

MODEL = "openai/gpt-test"
SHAPE = RequestShape(MODEL, prompt_bytes=100, max_output_tokens=50, choices=1, stream=False)


def ledgers(env: dict[str, str]) -> tuple[Ledger, Ledger]:
    master = os.urandom(32)
    first = Ledger({**env, "CREATE_TABLE": "y"}, vault=AesGcmKeyVault(master), key_scheme_factory=HmacApiKeyScheme)
    first.initialise()
    second = Ledger(env, vault=AesGcmKeyVault(master), key_scheme_factory=HmacApiKeyScheme)
    second.load_deployment()
    return first, second


@pytest.fixture(params=["sqlite", "postgres"])
def two_ledgers(request: pytest.FixtureRequest, tmp_path: Path, pg_schemas: PgSchemas):
    if request.param == "sqlite":
        database = parse_database_url(None, tmp_path)
    else:
        database = parse_database_url(pg_schemas.new_url(), tmp_path)
    first, second = ledgers(database.eventsourcing_env(create_tables=False))
    yield first, second
    for ledger in (first, second):
        ledger.stop_group_commit()
        ledger.close()


@dataclass
class Billed:
    """acme funded for some worst-case holds of ``SHAPE``, its key, and one billing per ledger."""

    key: str
    price: ModelPrice
    worst: int  # one hold's amount
    billings: list[RequestBilling]

    @property
    def usage(self) -> Usage:
        """The hold's own usage: a settlement of it charges exactly ``worst``."""
        return worst_case_usage(SHAPE.prompt_bytes, SHAPE.max_output_tokens, 1, self.price)


def billed_on_both(first: Ledger, second: Ledger, funded_holds: int) -> Billed:
    """The model priced, acme funded for ``funded_holds`` holds, and each ledger's writer started."""
    ProviderRegistry(first).register_provider(
        "openai", "openai", base_url=None, region=None, secret="sk-test-secret-0001"
    )
    Prices(first).set_price(MODEL, price_from_credits(input="1", output="2"))
    price = first.price_book().latest.price_for(MODEL)
    assert price is not None
    worst = price_usage(price, worst_case_usage(SHAPE.prompt_bytes, SHAPE.max_output_tokens, 1, price))
    Accounts(first).create_account("acme", starter_credits=funded_holds * worst)
    key = ApiKeys(first).issue_api_key("acme").plaintext
    billings = []
    for ledger in (first, second):
        ledger.start_group_commit()
        billings.append(
            RequestBilling(
                ledger,
                Router(ledger, CredentialHealth()),
                mode="credits",
                hold_ttl=timedelta(minutes=5),
                status_of=status_of,
            )
        )
    return Billed(key, price, worst, billings)


def test_two_writers_sharing_a_store_never_overdraw_and_charge_once(two_ledgers) -> None:
    first, second = two_ledgers
    billed = billed_on_both(first, second, funded_holds=30)
    key, worst, billings = billed.key, billed.worst, billed.billings
    outcomes: list[int] = []
    barrier = threading.Barrier(80)

    def call(billing: RequestBilling) -> None:
        barrier.wait()
        try:
            opened = billing.open_request(key, SHAPE, request_id=uuid4())
        except InsufficientCredits:
            outcomes.append(0)
            return
        route = next(billing.router.routes(opened.targets[0]))
        usage = billed.usage
        receipt = billing.complete_request(opened, route, usage)
        assert billing.complete_request(opened, route, usage).charge == receipt.charge  # a retry charges nothing more
        outcomes.append(receipt.charge)

    threads = [threading.Thread(target=call, args=(billings[i % 2],)) for i in range(80)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    account = first.get_account("acme")
    assert sum(1 for charge in outcomes if charge) == 30 and outcomes.count(0) == 50
    assert account.balance == 30 * worst - sum(outcomes) == 0 and account.held == 0
    writers = [ledger.writer for ledger in (first, second)]
    assert sum(w.commands for w in writers) > sum(w.batches for w in writers)  # some batches held several commands


def test_deferred_holds_of_two_writers_sharing_a_store_never_overdraw_and_each_request_closes_once(
    two_ledgers,
) -> None:
    """Whole answers on two "processes": each gate defers the holds it knows fit, neither sees
    the other's, so some are refused when their settlement places them. Exactly the funded
    number are charged; every other request is recorded as a 402 with nothing charged."""
    first, second = two_ledgers
    billed = billed_on_both(first, second, funded_holds=10)
    key, worst, billings, usage = billed.key, billed.worst, billed.billings, billed.usage
    for ledger in (first, second):
        Accounts(ledger).grant_credits("acme", 1)  # each writer has saved acme: its gate knows the room
    Accounts(first).adjust_credits("acme", -2, "the two test grants back")

    async def call(billing: RequestBilling) -> tuple[UUID, int, bool]:
        request_id = uuid4()
        try:
            opened = await billing.open_request_async(key, SHAPE, request_id=request_id)
        except InsufficientCredits:
            return request_id, 0, False
        deferred = opened.deferred_hold is not None
        route = next(billing.router.routes(opened.targets[0]))
        await asyncio.sleep(0)  # the calls interleave, as upstream calls do
        try:
            return request_id, (await billing.complete_request_async(opened, route, usage)).charge, deferred
        except InsufficientCredits:
            return request_id, 0, deferred

    async def burst() -> list[tuple[UUID, int, bool]]:
        return await asyncio.gather(*[call(billings[i % 2]) for i in range(40)])

    outcomes = asyncio.run(burst())
    charged = [charge for _, charge, _ in outcomes if charge]
    assert len(charged) == 10 and all(charge == worst for charge in charged)
    assert any(deferred for _, _, deferred in outcomes)  # the deferral was exercised
    account = first.get_account("acme")
    assert (account.balance, account.held) == (0, 0)
    for request_id, charge, _ in outcomes:
        record = first.get_request_record(request_id)
        if charge:
            assert (record.details.status, record.details.charge) == (200, charge)
        else:
            assert (record.details.status, record.details.error_code, record.details.charge) == (
                402,
                "insufficient_credits",
                0,
            )


def test_a_writer_never_decides_on_an_account_another_process_moved(two_ledgers) -> None:
    """The writer keeps the accounts it saved; a credit granted by another process must
    count at once (no stale 402), and a hold that process placed must be seen (released)."""
    first, second = two_ledgers
    account = Accounts(first).create_account("acme").id
    first.start_group_commit()
    Accounts(first).grant_credits("acme", 100)  # saved by the writer, which now keeps the account

    Accounts(second).grant_credits("acme", 1_000)
    hold = uuid4()
    first.change_account(account, lambda a: a.place_hold(hold, 1_000, first.clock.now()) or [])
    assert first.get_account(account).held == 1_000  # judged on 1,100, not on the kept 100

    late = uuid4()
    second.change_account(account, lambda a: a.place_hold(late, 50, second.clock.now()) or [])
    assert set(Accounts(first).release_expired_holds("acme")) == {hold, late}
    assert first.get_account(account).held == 0


def test_a_closed_event_loop_never_turns_a_durable_change_into_an_error() -> None:
    """An async caller's loop may be gone when its change is durable (shutdown): the other
    callers of the same batch still hear that theirs was saved."""
    import asyncio

    from application.group_commit import AccountWriter

    saved, busy, release = [], threading.Event(), threading.Event()

    class Account:
        pending_events: list[object] = []
        version = 1

    def blocking(account: object) -> list[object]:
        busy.set()
        release.wait(5)
        return []

    writer = AccountWriter(lambda _: Account(), lambda *objs: saved.append(objs), lambda *_: True)
    writer.start()
    first = threading.Thread(target=writer.submit, args=(uuid4(), blocking))
    first.start()
    assert busy.wait(5)  # the writer is now busy with a batch of its own
    loop = asyncio.new_event_loop()

    async def submit() -> None:
        writer.submit_async(uuid4(), lambda account: [])

    loop.run_until_complete(submit())
    loop.close()
    answers: list[object] = []
    other = threading.Thread(target=lambda: answers.append(writer.submit(uuid4(), lambda account: [])))
    other.start()
    deadline = time.monotonic() + 5
    while writer._queue.qsize() < 2 and time.monotonic() < deadline:
        time.sleep(0.01)  # both queued behind the busy batch: they form the next batch together
    assert writer._queue.qsize() == 2
    release.set()
    first.join(5)
    other.join(5)
    writer.stop()
    assert answers == [True]
    assert len(saved) == 2
