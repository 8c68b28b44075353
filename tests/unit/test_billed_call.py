"""The billed call (application/calls.py) with a fake provider, no server: failover order
and what it records and learns, the hold ordering (early upstream or not), a hold refused
after all, and a caller that went away."""

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest

from adapters.http.errors import status_of
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.billing import Receipt, RequestBilling, RequestShape
from application.calls import BilledCalls, StartedCall, embed
from application.ledger import Ledger
from application.ports import StatusOf
from application.prices import Prices
from application.pricing_input import price_from_credits
from application.providers import ProviderRegistry
from application.routing import Router
from domain.errors import InsufficientCredits, InvalidRequest, UpstreamError
from domain.pricing import price_usage, worst_case_usage
from domain.usage import Usage
from tests.fakes.provider import FakeProvider
from tests.unit.test_hold_gate import BusyWriter

KEY_A, KEY_B, KEY_BACKUP = "sk-credential-a-000000aaaa", "sk-credential-b-000000bbbb", "sk-backup-0000000000cccc"
BODY: dict[str, Any] = {"model": "smart", "messages": [{"role": "user", "content": "hello"}]}
SHAPE = RequestShape(model="smart", prompt_bytes=200, max_output_tokens=100, choices=1, stream=False)
STREAM = replace(SHAPE, stream=True)  # relayed as it comes: its hold is saved before the call is handed back
USAGE = Usage(input_tokens=10, output_tokens=5)


class CountingBilling(RequestBilling):
    """The real billing, counting the requests it closes: failed (released) and completed
    (settled, with the usage charged)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failed: list[tuple[UUID, int, str]] = []
        self.completed: list[tuple[UUID, int, str | None, Usage]] = []

    async def fail_request_async(self, opened: Any, *, status: int, error_code: str, **kwargs: Any) -> None:
        self.failed.append((opened.request_id, status, error_code))
        await super().fail_request_async(opened, status=status, error_code=error_code, **kwargs)

    async def complete_request_async(
        self, opened: Any, route: Any, usage: Usage, *, status: int = 200, error_code: str | None = None, **kwargs: Any
    ) -> Receipt:
        self.completed.append((opened.request_id, status, error_code, usage))
        return await super().complete_request_async(
            opened, route, usage, status=status, error_code=error_code, **kwargs
        )


@dataclass
class World:
    ledger: Ledger
    router: Router
    key: str
    worst: int

    def calls(
        self, provider: FakeProvider, *, early_upstream: bool = True, statuses: StatusOf = status_of
    ) -> BilledCalls:
        """``statuses``: the mapping of errors to the statuses recorded (the API's by default)."""
        billing = CountingBilling(
            self.ledger,
            self.router,
            mode="credits",
            hold_ttl=timedelta(minutes=15),
            status_of=statuses,
            early_upstream=early_upstream,
        )
        return BilledCalls(billing, self.router, {"openai": provider}, ProviderRegistry(self.ledger))

    def account(self) -> tuple[int, int]:
        account = self.ledger.get_account("acme")
        return account.balance, account.held

    def record(self, request_id: UUID) -> Any:
        return self.ledger.find(request_id)

    def credential_enabled(self, credential_id: str | None) -> bool:
        providers = {p.name: p for p in self.ledger.list_providers()}
        return bool(next(c.enabled for c in providers["primary"].credentials if c.credential_id == credential_id))


@pytest.fixture
def world(ledger: Ledger, router: Router) -> Iterator[World]:
    ProviderRegistry(ledger).register_provider(
        "primary", "openai", base_url="http://127.0.0.1:9/v1", region=None, secret=KEY_A
    )
    ProviderRegistry(ledger).add_credential("primary", KEY_B)
    ProviderRegistry(ledger).register_provider(
        "backup", "openai", base_url="http://127.0.0.1:9/v1", region=None, secret=KEY_BACKUP
    )
    Prices(ledger).set_price("primary/gpt-test", price_from_credits(input="2", output="8"))
    Prices(ledger).set_price("backup/gpt-mini", price_from_credits(input="2", output="8"))
    Prices(ledger).set_alias("smart", ["primary/gpt-test", "backup/gpt-mini"])
    Accounts(ledger).create_account("acme")
    key = ApiKeys(ledger).issue_api_key("acme").plaintext
    price = ledger.price_book().latest.price_for("primary/gpt-test")
    assert price is not None
    worst = price_usage(price, worst_case_usage(SHAPE.prompt_bytes, SHAPE.max_output_tokens, 1, price))
    ledger.start_group_commit()
    yield World(ledger, router, key, worst)
    ledger.stop_group_commit()


def started(calls: BilledCalls, key: str) -> StartedCall[Any]:
    async def scenario() -> StartedCall[Any]:
        opened = await calls.open(key, SHAPE, uuid4())
        return await calls.start_chat(opened, BODY)

    return asyncio.run(scenario())


def refused(calls: BilledCalls, key: str) -> tuple[Exception, UUID]:
    request_id = uuid4()

    async def scenario() -> None:
        opened = await calls.open(key, SHAPE, request_id)
        await calls.start_chat(opened, BODY)

    with pytest.raises(Exception) as error:
        asyncio.run(scenario())
    return error.value, request_id


def test_retryable_failures_move_to_the_other_credential_then_to_the_fallback_model(world: World) -> None:
    Accounts(world.ledger).grant_credits("acme", 10 * world.worst)
    provider = FakeProvider(
        UpstreamError("boom", status=503), UpstreamError("slow", status=504, code="upstream_timeout")
    )
    calls = world.calls(provider)
    call = started(calls, world.key)
    assert set(provider.secrets_seen[:2]) == {KEY_A, KEY_B} and provider.secrets_seen[2:] == [KEY_BACKUP]
    assert call.route.model == "backup/gpt-mini"
    assert [(a.route.provider, a.status, a.error_code) for a in call.attempts] == [
        ("primary", 503, "upstream_error"),
        ("primary", 504, "upstream_timeout"),
    ]
    receipt = asyncio.run(calls.complete(call, USAGE, ttfb_ms=1.0))
    record = world.record(call.opened.request_id)
    assert [(a.provider, a.status) for a in record.attempts] == [("primary", 503), ("primary", 504)]
    assert record.details.status == 200 and world.account() == (10 * world.worst - receipt.charge, 0)


def test_a_failure_the_caller_caused_is_answered_at_once_and_releases_the_hold(world: World) -> None:
    Accounts(world.ledger).grant_credits("acme", 10 * world.worst)
    provider = FakeProvider(UpstreamError("bad request", status=400, code="invalid_request_error"))
    calls = world.calls(provider)
    error, request_id = refused(calls, world.key)
    assert isinstance(error, UpstreamError) and error.status == 400
    assert len(provider.routes) == 1  # not retryable: no other credential, no fallback
    record = world.record(request_id)
    assert (record.details.status, record.details.error_code, record.attempts) == (
        400,
        "invalid_request_error",
        [],
    )
    assert world.account() == (10 * world.worst, 0)
    assert calls.billing.failed == [(request_id, 400, "invalid_request_error")]  # type: ignore[attr-defined]


def test_when_every_attempt_fails_the_last_error_is_answered_and_the_earlier_ones_recorded(world: World) -> None:
    Accounts(world.ledger).grant_credits("acme", 10 * world.worst)
    provider = FakeProvider(*[UpstreamError("boom", status=502)] * 3)
    calls = world.calls(provider)
    error, request_id = refused(calls, world.key)
    assert isinstance(error, UpstreamError) and error.status == 502 and len(provider.routes) == 3
    record = world.record(request_id)
    assert record.details.status == 502 and len(record.attempts) == 2  # the last one is the request's own route
    assert world.account() == (10 * world.worst, 0)


def test_a_refused_credential_is_disabled_and_the_other_one_serves(world: World) -> None:
    Accounts(world.ledger).grant_credits("acme", 10 * world.worst)
    provider = FakeProvider(UpstreamError("refused the credential", status=502, code="upstream_auth_failed"))
    call = started(world.calls(provider), world.key)
    refused_route, served_route = provider.routes
    assert call.route == served_route and served_route.provider == "primary"
    assert not world.credential_enabled(refused_route.credential_id)
    assert world.credential_enabled(served_route.credential_id)


def test_a_429_cools_its_credential_down_and_the_one_that_served_stays_available(world: World) -> None:
    Accounts(world.ledger).grant_credits("acme", 10 * world.worst)
    provider = FakeProvider(UpstreamError("slow down", status=429, code="rate_limit_exceeded", retry_after="30"))
    started(world.calls(provider), world.key)
    limited, served = provider.routes
    assert limited.credential_id is not None and served.credential_id is not None
    assert world.router.health.cooldown(limited.credential_id) is not None
    assert world.router.health.cooldown(served.credential_id) is None


def test_once_an_attempt_has_started_no_other_is_made(world: World) -> None:
    """Failover happens only before the first byte: a started call that then breaks is
    failed as it is (released, recorded), never tried elsewhere."""
    Accounts(world.ledger).grant_credits("acme", 10 * world.worst)
    provider = FakeProvider(None, UpstreamError("never reached", status=503))
    calls = world.calls(provider)
    call = started(calls, world.key)
    assert call.attempts == () and len(provider.routes) == 1
    asyncio.run(calls.fail(call, 502, "upstream_stream_broken"))
    assert len(provider.routes) == 1
    assert world.record(call.opened.request_id).details.error_code == "upstream_stream_broken"
    assert world.account() == (10 * world.worst, 0)


def test_a_bug_of_ours_while_starting_is_recorded_as_a_500_released_and_nothing_else_is_tried(world: World) -> None:
    """Not the provider's failure (that is an UpstreamError): no failover, health untouched,
    and the record says internal_error, not that the caller went away."""
    Accounts(world.ledger).grant_credits("acme", 10 * world.worst)
    provider = FakeProvider(KeyError("choices"))
    calls = world.calls(provider)
    error, request_id = refused(calls, world.key)
    assert isinstance(error, KeyError) and len(provider.routes) == 1
    assert calls.billing.failed == [(request_id, 500, "internal_error")]  # type: ignore[attr-defined]
    record = world.record(request_id)
    assert (record.details.status, record.details.error_code) == (500, "internal_error")
    assert world.account() == (10 * world.worst, 0)
    credential_id = provider.routes[0].credential_id
    assert credential_id is not None and world.router.health.cooldown(credential_id) is None


def test_a_capability_the_provider_lacks_is_a_400_naming_it_and_nothing_else_is_tried(world: World) -> None:
    Accounts(world.ledger).grant_credits("acme", 10 * world.worst)
    provider = FakeProvider()
    calls = world.calls(provider)
    request_id = uuid4()

    async def scenario() -> None:
        opened = await calls.open(world.key, SHAPE, request_id)
        await calls.start_document(opened, embed, BODY)

    with pytest.raises(InvalidRequest, match=r"provider 'primary' \(openai\) does not offer embeddings"):
        asyncio.run(scenario())
    assert world.record(request_id).details.status == 400 and world.account() == (10 * world.worst, 0)


def test_an_unreadable_whole_answer_fails_the_call_uncharged(world: World) -> None:
    Accounts(world.ledger).grant_credits("acme", 10 * world.worst)
    calls = world.calls(FakeProvider())

    async def answer(_: Any, __: Any, ___: Any) -> bytes:
        return b"not json"

    async def scenario() -> UUID:
        opened = await calls.open(world.key, SHAPE, uuid4())
        call = await calls.start_document(opened, answer, BODY)
        with pytest.raises(UpstreamError):
            await calls.document(call)
        return opened.request_id

    request_id = asyncio.run(scenario())
    assert world.record(request_id).details.error_code == "upstream_bad_response"
    assert world.account() == (10 * world.worst, 0)
    served = asyncio.run(_document(world.calls(FakeProvider()), world.key, orjson.dumps({"data": []})))
    assert served == {"data": []}


async def _document(calls: BilledCalls, key: str, raw: bytes) -> dict[str, Any]:
    async def answer(_: Any, __: Any, ___: Any) -> bytes:
        return raw

    opened = await calls.open(key, SHAPE, uuid4())
    return await calls.document(await calls.start_document(opened, answer, BODY))


def test_with_early_upstream_the_call_starts_before_the_hold_is_durable_but_is_not_returned_until_it_is(
    world: World,
) -> None:
    Accounts(world.ledger).grant_credits("acme", 2 * world.worst)  # saved by the writer: the gate knows the room
    provider = FakeProvider()
    calls = world.calls(provider)
    writer = BusyWriter(world.ledger)

    async def scenario() -> None:
        start = asyncio.ensure_future(started_call(calls, world.key))
        await asyncio.sleep(0.05)
        assert len(provider.routes) == 1  # upstream already called
        assert not start.done()  # but nothing is handed back before the hold is durable
        writer.release()
        call = await start
        assert not provider.exchanges[0].aborted and call.result is provider.exchanges[0]

    asyncio.run(scenario())
    assert world.account() == (2 * world.worst, world.worst)


def test_without_early_upstream_the_call_waits_for_the_durable_hold(world: World) -> None:
    Accounts(world.ledger).grant_credits("acme", 2 * world.worst)
    provider = FakeProvider()
    calls = world.calls(provider, early_upstream=False)
    writer = BusyWriter(world.ledger)

    async def scenario() -> None:
        start = asyncio.ensure_future(started_call(calls, world.key))
        await asyncio.sleep(0.05)
        assert provider.routes == []  # no upstream call before the hold is saved
        writer.release()
        await start
        assert len(provider.routes) == 1

    asyncio.run(scenario())
    assert world.account() == (2 * world.worst, world.worst)


def test_a_whole_answer_is_handed_back_before_the_writer_answers_and_its_hold_lands_with_the_charge(
    world: World,
) -> None:
    """A whole answer's admitted hold is deferred: its call neither waits for the writer nor
    hands it anything before the answer is read; the settlement places and settles the hold."""
    Accounts(world.ledger).grant_credits("acme", 2 * world.worst)
    provider = FakeProvider()
    calls = world.calls(provider)
    writer = BusyWriter(world.ledger)  # were anything of the request handed to it, it would wait

    async def scenario() -> Receipt:
        call = await asyncio.wait_for(started_call(calls, world.key, SHAPE), 5)
        assert call.result is provider.exchanges[0] and world.account() == (2 * world.worst, 0)
        writer.release()
        return await calls.complete(call, USAGE, ttfb_ms=None)

    receipt = asyncio.run(scenario())
    assert world.account() == (2 * world.worst - receipt.charge, 0) and receipt.charge > 0
    assert world.record(receipt.request_id).details.charge == receipt.charge


def test_a_deferred_hold_refused_at_the_settlement_withholds_the_answer_uncharged(world: World) -> None:
    Accounts(world.ledger).grant_credits("acme", world.worst)
    provider = FakeProvider()
    calls = world.calls(provider)

    async def scenario() -> UUID:
        call = await started_call(calls, world.key, SHAPE)
        Accounts(world.ledger).adjust_credits("acme", -world.worst, "operator debit")  # unseen by the gate
        with pytest.raises(InsufficientCredits):
            await calls.complete(call, USAGE, ttfb_ms=None)
        return call.opened.request_id

    request_id = asyncio.run(scenario())
    record = world.record(request_id)
    assert (record.details.status, record.details.error_code, record.details.charge) == (
        402,
        "insufficient_credits",
        0,
    )
    assert record.details.provider == "primary"  # the answered call's route, for reconciliation
    assert calls.billing.failed == []  # type: ignore[attr-defined]  # closed once: by its refusal
    assert world.account() == (0, 0)


async def started_call(calls: BilledCalls, key: str, shape: RequestShape = STREAM) -> StartedCall[Any]:
    opened = await calls.open(key, shape, uuid4())
    return await calls.start_chat(opened, BODY)


def test_a_hold_refused_after_its_call_started_abandons_the_call_uncharged(world: World) -> None:
    Accounts(world.ledger).grant_credits("acme", world.worst)
    provider = FakeProvider()
    calls = world.calls(provider)
    writer = BusyWriter(world.ledger)
    debit = threading.Thread(
        target=Accounts(world.ledger).adjust_credits, args=("acme", -world.worst, "operator debit")
    )
    debit.start()
    writer_queue = world.ledger.writer._queue if world.ledger.writer is not None else None
    assert writer_queue is not None
    while writer_queue.qsize() < 1:
        threading.Event().wait(0.001)  # the debit is queued before the hold

    async def scenario() -> UUID:
        opened = await calls.open(world.key, STREAM, uuid4())
        assert opened.hold_durable is not None  # the gate said yes: the call may start now
        start = asyncio.ensure_future(calls.start_chat(opened, BODY))
        await asyncio.sleep(0.05)
        writer.release()
        with pytest.raises(InsufficientCredits):
            await start
        return opened.request_id

    request_id = asyncio.run(scenario())
    debit.join(5)
    assert provider.exchanges[0].aborted  # the upstream call is given up, unanswered
    record = world.record(request_id)
    assert (record.details.status, record.details.error_code, record.details.charge) == (
        402,
        "insufficient_credits",
        0,
    )
    assert record.details.provider == "primary"  # the abandoned call's route, for reconciliation
    assert world.account() == (0, 0)


def test_a_caller_gone_during_the_upstream_start_is_a_499_released_once(world: World) -> None:
    Accounts(world.ledger).grant_credits("acme", 10 * world.worst)
    provider = FakeProvider()
    calls = world.calls(provider)
    request_id = uuid4()

    async def scenario() -> None:
        provider.gate = asyncio.Event()  # never set: the provider never answers
        opened = await calls.open(world.key, SHAPE, request_id)
        start = asyncio.ensure_future(calls.start_chat(opened, BODY))
        await asyncio.sleep(0.02)
        start.cancel()
        with pytest.raises(asyncio.CancelledError):
            await start

    asyncio.run(scenario())
    record = world.record(request_id)
    assert (record.details.status, record.details.error_code) == (499, "client_disconnected")
    assert calls.billing.failed == [(request_id, 499, "client_disconnected")]  # type: ignore[attr-defined]
    assert world.account() == (10 * world.worst, 0)


def test_a_caller_gone_while_the_hold_is_saved_abandons_the_call_as_a_499_released_once(world: World) -> None:
    Accounts(world.ledger).grant_credits("acme", 10 * world.worst)
    provider = FakeProvider()
    calls = world.calls(provider)
    writer = BusyWriter(world.ledger)
    request_id = uuid4()

    async def scenario() -> None:
        opened = await calls.open(world.key, STREAM, request_id)
        start = asyncio.ensure_future(calls.start_chat(opened, BODY))
        await asyncio.sleep(0.05)  # started upstream, waiting for the durable hold
        start.cancel()
        await asyncio.sleep(0)
        writer.release()
        with pytest.raises(asyncio.CancelledError):
            await start

    asyncio.run(scenario())
    assert provider.exchanges[0].aborted
    record = world.record(request_id)
    assert (record.details.status, record.details.provider) == (499, "primary")
    assert calls.billing.failed == [(request_id, 499, "client_disconnected")]  # type: ignore[attr-defined]
    assert world.account() == (10 * world.worst, 0)
