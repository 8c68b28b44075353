"""A plain request whose settlement the store failed is answered 503 ``store_unavailable``,
and its void (application/voids.py) is kept pending until the store answers again
(docs/reliability.md, finding 5): the hold is released at once (not left to the sweep), or,
when the settlement had landed although the store reported it failed (an ambiguous commit),
the charge is refunded to the nanocredit; a second void does nothing; a settlement committing
late, after the void, is refused by the store. A hypothesis property drives random
interleavings of these: a 503 always nets 0, a 200 always its receipt.

The store is the real ledger (in memory, or SQLite over HTTP) whose recorder is wrapped to
fail as a store going away does: before writing, or after writing (the commit landed, its
answer was lost), or holding the commit back to land later."""

import asyncio
import os
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import IntegrityError, OperationalError, StoredEvent
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.bootstrap import build_services, in_memory_ledger
from adapters.crypto.aes_gcm import AesGcmKeyVault
from adapters.crypto.key_digest import HmacApiKeyScheme
from adapters.http.errors import status_of
from adapters.settings import DatabaseConfig, Settings
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.billing import RequestBilling, RequestShape
from application.calls import BilledCalls
from application.health import CredentialHealth
from application.ledger import Ledger
from application.pending_settlements import PendingSettlements
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from application.routing import Router
from application.voids import REFUND_REASON, RELEASE_REASON, Void
from domain.account import Account
from domain.usage import Usage
from tests.fakes.clock import FakeClock
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.fakes.provider import FakeProvider
from tests.support.routes import first_route
from tests.unit.test_billed_call import World, world  # noqa: F401  (the fixture)
from tests.unit.test_key_http import auth, in_process_app
from tests.unit.test_metered_stream import PROVIDER_USAGE, chat_request, start

GRANT = 10**15
STORE_AWAY = OperationalError("server closed the connection unexpectedly")


class AmbiguousStore:
    """The ledger's recorder as a store going away. ``fate`` of the next save that settles a
    hold: ``"lands"``; ``"refused"`` (nothing written); ``"unconfirmed"`` (written, then
    reported failed: an ambiguous commit); ``"in_flight"`` (reported failed, its events kept
    in ``late`` to commit later). ``away``: every save fails before writing."""

    def __init__(self, ledger: Ledger) -> None:
        self._insert = ledger.recorder.insert_events
        self.fate = "lands"
        self.away = False
        self.failed = 0
        self.late: list[StoredEvent] | None = None
        ledger.recorder.insert_events = self.insert_events  # type: ignore[method-assign]

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Any:
        if self.away:
            self.failed += 1
            raise STORE_AWAY
        if not any(event.topic.endswith(".HoldSettled") for event in stored_events):
            return self._insert(stored_events, **kwargs)
        fate, self.fate = self.fate, "lands"
        if fate == "lands":
            return self._insert(stored_events, **kwargs)
        self.failed += 1
        if fate == "unconfirmed":
            self._insert(stored_events, **kwargs)
        elif fate == "in_flight":
            self.late = list(stored_events)
        raise STORE_AWAY

    def commit_late(self) -> None:
        """The held-back settlement's commit reaches the store now."""
        assert self.late is not None
        late, self.late = self.late, None
        self._insert(late)


def history(ledger: Ledger, request_id: UUID) -> list[tuple[str, int, str]]:
    """(event, amount, reason) of every account event that moved or closed the request's hold."""
    account = ledger.get_account("acme")
    found = []
    for event in ledger.events.get(account.id):
        if isinstance(event, (Account.HoldSettled, Account.ChargeRefunded, Account.HoldReleased)):
            if UUID(str(event.request_id)) == request_id:
                found.append((type(event).__name__, event.amount, getattr(event, "reason", "")))
    return found


def net_charge(ledger: Ledger, request_id: UUID) -> int:
    moves = history(ledger, request_id)
    return sum(a for e, a, _ in moves if e == "HoldSettled") - sum(a for e, a, _ in moves if e == "ChargeRefunded")


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll ``condition`` (bounded): the retries run on this loop."""
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


# --- the billed call: a plain answer's settlement failed --------------------------------


@pytest.fixture
def store(world: World) -> AmbiguousStore:  # noqa: F811
    flaky = AmbiguousStore(world.ledger)
    Accounts(world.ledger).grant_credits("acme", GRANT)
    return flaky


def plain_calls(world: World, pending: PendingSettlements) -> BilledCalls:  # noqa: F811
    billing = RequestBilling(
        world.ledger, world.router, mode="credits", hold_ttl=timedelta(minutes=15), status_of=status_of
    )
    return BilledCalls(
        billing, world.router, {"openai": FakeProvider()}, ProviderRegistry(world.ledger), pending=pending
    )


def answered_503(calls: BilledCalls, world: World, during: Callable[[], None] = lambda: None) -> UUID:  # noqa: F811
    """One plain call whose settlement fails: the caller gets the store's error (a 503); then
    ``during()`` while its void is pending, and wait (bounded) until the void is done."""
    assert calls.pending is not None
    pending = calls.pending

    async def scenario() -> UUID:
        call = await start(calls, world.key, chat_request())
        with pytest.raises(OperationalError) as raised:
            await calls.complete(call, PROVIDER_USAGE, None)
        assert status_of(raised.value) == 503
        assert pending.pending == 1
        during()
        await until(lambda: pending.pending == 0)
        return call.opened.request_id

    return asyncio.run(scenario())


def quick() -> PendingSettlements:
    return PendingSettlements(first_wait=0.01, max_wait=0.05)


def test_a_settlement_that_landed_unconfirmed_is_refunded_to_the_nanocredit_once_the_store_answers(
    world: World,  # noqa: F811
    store: AmbiguousStore,
) -> None:
    store.fate = "unconfirmed"
    pending = quick()
    request_id = answered_503(plain_calls(world, pending), world)

    (settled, refunded) = history(world.ledger, request_id)
    assert settled[0] == "HoldSettled" and settled[1] > 0
    assert refunded == ("ChargeRefunded", settled[1], REFUND_REASON) and "store_unavailable" in refunded[2]
    assert world.account() == (GRANT, 0)  # exactly as before the request: nothing held, nothing charged net
    assert pending.landed == 1 and pending.given_up == 0


def test_a_hold_never_settled_is_released_at_once_and_recorded_503_not_left_to_the_sweep(
    world: World,  # noqa: F811
    store: AmbiguousStore,
) -> None:
    store.fate = "refused"
    request_id = answered_503(plain_calls(world, quick()), world)

    assert [(event, reason) for event, _, reason in history(world.ledger, request_id)] == [
        ("HoldReleased", RELEASE_REASON)
    ]
    assert world.account() == (GRANT, 0)
    details = world.record(request_id).details
    assert (details.outcome, details.status, details.error_code, details.charge) == (
        "failed",
        503,
        "store_unavailable",
        0,
    )


def test_the_void_waits_for_the_store_and_lands_once_it_answers_again(
    world: World,  # noqa: F811
    store: AmbiguousStore,
) -> None:
    store.fate = "unconfirmed"
    pending = quick()

    def store_away_for_three_tries() -> None:
        store.away = True
        failed = store.failed

        async def back() -> None:
            await until(lambda: store.failed >= failed + 3)
            store.away = False

        asyncio.get_running_loop().create_task(back())

    request_id = answered_503(plain_calls(world, pending), world, during=store_away_for_three_tries)
    assert store.failed >= 4  # the settlement, then the void's tries while the store was away
    assert net_charge(world.ledger, request_id) == 0 and world.account() == (GRANT, 0)
    assert pending.landed == 1


def test_a_second_void_of_the_same_request_does_nothing(
    world: World,  # noqa: F811
    store: AmbiguousStore,
) -> None:
    for fate in ("unconfirmed", "refused"):
        store.fate = fate
        request_id = answered_503(plain_calls(world, quick()), world)
        before = history(world.ledger, request_id)
        again = Void(world.ledger, request_id, lambda: pytest.fail("nothing to record: it is recorded"))
        assert world.ledger.change_account(world.ledger.get_account("acme").id, again) is False
        assert again.outcome == "nothing"
        assert history(world.ledger, request_id) == before
        assert world.account() == (GRANT, 0)


def test_a_settlement_committing_after_the_void_is_refused_by_the_store(
    world: World,  # noqa: F811
    store: AmbiguousStore,
) -> None:
    store.fate = "in_flight"  # the commit is still on its way when the gateway gives up on it
    request_id = answered_503(plain_calls(world, quick()), world)
    assert [event for event, _, _ in history(world.ledger, request_id)] == ["HoldReleased"]
    with pytest.raises(IntegrityError):
        store.commit_late()
    assert net_charge(world.ledger, request_id) == 0 and world.account() == (GRANT, 0)
    assert world.record(request_id).details.status == 503


# --- over HTTP, on SQLite: the answer and the balance -----------------------------------

SECRET = "sk-void-provider-secret-1234"
CHAT = "openai/gpt-4o-mini"


def sqlite_ledger(directory: Path, clock: FakeClock) -> Ledger:
    database = DatabaseConfig(kind="sqlite", sqlite_path=directory / "tallyhub.sqlite")
    ledger = Ledger(
        database.eventsourcing_env(create_tables=True),
        vault=AesGcmKeyVault(os.urandom(32)),
        key_scheme_factory=HmacApiKeyScheme,
        clock=clock,
    )
    ledger.initialise()
    return ledger


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[TestClient, Ledger, AmbiguousStore, PendingSettlements, str]]:
    upstream = FakeOpenAIUpstream(api_key=SECRET).start()
    ledger = sqlite_ledger(tmp_path, FakeClock())
    services = build_services(Settings(), ledger=ledger)
    services.pending_settlements.first_wait, services.pending_settlements.max_wait = 0.01, 0.05
    ProviderRegistry(ledger).register_provider(
        "openai", "openai", base_url=upstream.base_url, region=None, secret=SECRET
    )
    Prices(ledger).set_price(CHAT, price_from_credits(input="2", output="8"))
    Accounts(ledger).create_account("acme", starter_credits=GRANT)
    key = ApiKeys(ledger).issue_api_key("acme").plaintext
    flaky = AmbiguousStore(ledger)
    with TestClient(in_process_app(services)) as client:
        yield client, ledger, flaky, services.pending_settlements, key
    ledger.close()
    upstream.stop()


def test_over_http_the_caller_gets_a_503_store_unavailable_and_the_balance_is_as_before_to_the_nanocredit(
    gateway: tuple[TestClient, Ledger, AmbiguousStore, PendingSettlements, str],
) -> None:
    client, ledger, store, pending, key = gateway
    store.fate = "unconfirmed"  # committed in SQLite, then the connection "failed"
    response = client.post(
        "/v1/chat/completions", headers=auth(key), json={"model": CHAT, "messages": [{"role": "user", "content": "hi"}]}
    )
    assert response.status_code == 503
    assert response.json() == {
        "error": {
            "message": "the store is unavailable; try again",
            "type": "server_error",
            "param": None,
            "code": "store_unavailable",
        }
    }
    request_id = UUID(response.headers["x-request-id"])
    asyncio.run(until(lambda: pending.pending == 0 and pending.landed == 1))
    moves = history(ledger, request_id)
    assert [event for event, _, _ in moves] == ["HoldSettled", "ChargeRefunded"] and moves[0][1] > 0
    account = ledger.get_account("acme")
    assert (account.balance, account.held) == (GRANT, 0)

    served = client.post(
        "/v1/chat/completions", headers=auth(key), json={"model": CHAT, "messages": [{"role": "user", "content": "hi"}]}
    )
    assert served.status_code == 200  # the store answers again: served and charged its receipt
    assert net_charge(ledger, UUID(served.headers["x-request-id"])) == GRANT - ledger.get_account("acme").balance


# --- the property: any interleaving nets a 503 to 0 and a 200 to its receipt -------------

MODEL = "openai/gpt-test"
SHAPE = RequestShape(model=MODEL, prompt_bytes=400, max_output_tokens=200, choices=1, stream=False)
TTL = timedelta(minutes=15)

fates = st.sampled_from(["lands", "refused", "unconfirmed", "in_flight"])
request_plans = st.fixed_dictionaries(
    {
        "fate": fates,
        "input": st.integers(0, 100),
        "output": st.integers(0, 200),
        "late_before_void": st.booleans(),  # an in-flight commit reaches the store before the void runs
        "swept_first": st.booleans(),  # the hold sweep ran before the void (the store was away that long)
        "away": st.integers(0, 3),  # the void's tries that find the store still away
        "again": st.integers(0, 2),  # voids of the same request run again afterwards
    }
)


def property_ledger() -> tuple[Ledger, FakeClock, RequestBilling, str]:
    clock = FakeClock()
    ledger = in_memory_ledger(clock=clock)
    ledger.initialise()
    ProviderRegistry(ledger).register_provider(
        "openai", "openai", base_url="http://127.0.0.1:9/v1", region=None, secret="sk-test-secret-0001"
    )
    Prices(ledger).set_price(MODEL, price_from_credits(input="2", output="8"))
    Accounts(ledger).create_account("acme")
    Accounts(ledger).grant_credits("acme", GRANT)
    key = ApiKeys(ledger).issue_api_key("acme").plaintext
    billing = RequestBilling(
        ledger, Router(ledger, CredentialHealth()), mode="credits", hold_ttl=TTL, status_of=status_of
    )
    return ledger, clock, billing, key


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(request_plans, min_size=1, max_size=5))
def test_any_interleaving_of_landed_and_lost_commits_and_retries_nets_a_503_to_0_and_a_200_to_its_receipt(
    plans: list[dict[str, Any]],
) -> None:
    ledger, clock, billing, key = property_ledger()
    store = AmbiguousStore(ledger)
    account_id = ledger.get_account("acme").id
    served: dict[UUID, int] = {}
    voided: list[UUID] = []
    for plan in plans:
        opened = billing.open_request(key, SHAPE)
        route = first_route(billing, opened)
        store.fate = plan["fate"]
        try:
            served[opened.request_id] = billing.complete_request(
                opened, route, Usage(input_tokens=plan["input"], output_tokens=plan["output"])
            ).charge
            continue
        except OperationalError as error:
            void = billing.void(opened, error, route, ())
        voided.append(opened.request_id)
        if store.late is not None and plan["late_before_void"]:
            store.commit_late()
        if plan["swept_first"]:
            clock.advance(seconds=TTL.total_seconds() + 1)
            Accounts(ledger).release_expired_holds("acme")
        for _ in range(plan["away"]):
            store.away = True
            try:
                ledger.change_account(account_id, void)
            except OperationalError:
                pass  # the store still away: nothing written
            else:
                assert void.outcome == "nothing"  # a free request's charge: nothing to refund, nothing written
            store.away = False
        ledger.change_account(account_id, void)
        if store.late is not None:  # the void ran first: the late commit can never land
            with pytest.raises(IntegrityError):
                store.commit_late()
        for _ in range(plan["again"]):
            assert ledger.change_account(account_id, void) is False

    for request_id, charge in served.items():
        assert net_charge(ledger, request_id) == charge
    for request_id in voided:
        assert net_charge(ledger, request_id) == 0
        moves = [event for event, _, _ in history(ledger, request_id)]
        assert moves.count("HoldSettled") <= 1 and moves.count("ChargeRefunded") <= 1
        assert ledger.find(request_id) is not None  # recorded: failed 503, or charged and refunded
    account = ledger.get_account("acme")
    assert (account.balance, account.held) == (GRANT - sum(served.values()), 0)
