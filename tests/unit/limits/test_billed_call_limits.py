"""Rate limits in the billed call (application/calls.py) with the fake provider, no server:
a refused request is recorded as a 429 with nothing held or charged; the tokens admitted are
the worst case, corrected to the charged usage at settlement; the parallel slot is released
on every ending (completed, failed, hold refused, each way a stream ends); the key's and the
account's limits both apply; the 429 carries Retry-After and OpenAI's headers."""

import asyncio
from collections.abc import Coroutine
from typing import Any
from uuid import UUID, uuid4

import pytest

from adapters.http.errors import response_for
from adapters.http.receipts import receipt_headers
from application.accounts import Accounts
from application.api_keys import ApiKeys
from application.calls import BilledCalls, StartedCall, worst_case_tokens
from application.ports import Admission, LimitScope
from application.rate_limits import InProcessRateLimiter, RateLimitScopes, RequestLimits
from application.streams import StreamMeter
from domain.errors import InsufficientCredits, RateLimitExceeded, UpstreamError
from domain.usage import Usage
from tests.fakes.provider import FakeProvider, StreamScript
from tests.unit.test_billed_call import BODY, SHAPE, USAGE, World, world  # noqa: F401  (the fixture)

NOW = 1_700_000_000.0


class CountingLimiter(InProcessRateLimiter):
    """The in-process limiter, remembering each settlement (lease, tokens)."""

    def __init__(self) -> None:
        super().__init__(lease_seconds=900)
        self.settled: list[tuple[str, int]] = []

    def settle_now(self, admission: Admission, tokens: int) -> None:
        self.settled.append((admission.lease, tokens))
        super().settle_now(admission, tokens)

    def tokens_used(self, scope: str) -> int:
        return self._scopes[scope].tokens.total

    def slots(self, scope: str) -> int:
        return len(self._scopes[scope].slots)


def limited(world: World, provider: FakeProvider) -> tuple[BilledCalls, CountingLimiter]:
    limiter = CountingLimiter()
    calls = world.calls(provider)
    calls.limits = RequestLimits(limiter, RateLimitScopes(world.ledger), clock=lambda: NOW)
    return calls, limiter


def key_id(world: World) -> UUID:
    return world.ledger.authenticate(world.key).id


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coroutine)


async def start(calls: BilledCalls, key: str, request_id: UUID | None = None) -> StartedCall[Any]:
    opened = await calls.open(key, SHAPE, request_id or uuid4())
    return await calls.start_chat(opened, BODY)


def test_a_refused_request_is_recorded_as_a_429_and_nothing_is_held_or_charged(world: World) -> None:
    Accounts(world.ledger).grant_credits("acme", 10 * world.worst)
    ApiKeys(world.ledger).set_key_limits(key_id(world), rpm=1)
    calls, _ = limited(world, FakeProvider())
    run(calls.complete(run(start(calls, world.key)), USAGE, ttfb_ms=1.0))
    balance = world.account()
    provider_calls = len(calls.failover.providers["openai"].routes)  # type: ignore[attr-defined]
    request_id = uuid4()
    with pytest.raises(RateLimitExceeded) as refused:
        run(start(calls, world.key, request_id))
    assert world.account() == balance and balance[1] == 0  # nothing held, nothing charged
    assert len(calls.failover.providers["openai"].routes) == provider_calls  # type: ignore[attr-defined]
    record = world.record(request_id)
    assert (record.details.status, record.details.error_code, record.details.charge) == (
        429,
        "rate_limit_exceeded",
        0,
    )
    assert refused.value.refused_by == f"key:{key_id(world)} requests"
    response = response_for(refused.value)
    assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1
    assert response.headers["x-ratelimit-limit-requests"] == "1"
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert response.headers["x-ratelimit-reset-requests"].endswith("s")


def test_tokens_are_admitted_at_the_worst_case_and_corrected_to_the_charged_usage(world: World) -> None:
    Accounts(world.ledger).grant_credits("acme", 10 * world.worst)
    key = key_id(world)
    ApiKeys(world.ledger).set_key_limits(key, tpm=1_000_000)
    calls, limiter = limited(world, FakeProvider())
    call = run(start(calls, world.key))
    worst = worst_case_tokens(call.opened)
    assert worst > USAGE.input_tokens + USAGE.output_tokens
    assert limiter.tokens_used(f"key:{key}") == worst
    tokens = call.opened.rate_limit.admission.tokens
    assert tokens is not None and (tokens.limit, tokens.remaining) == (1_000_000, 1_000_000 - worst)
    receipt = run(calls.complete(call, USAGE, ttfb_ms=1.0))
    assert limiter.tokens_used(f"key:{key}") == USAGE.input_tokens + USAGE.output_tokens
    headers = receipt_headers(receipt, call.opened)
    assert headers["x-ratelimit-limit-tokens"] == "1000000"
    assert headers["x-ratelimit-remaining-tokens"] == str(1_000_000 - worst)
    assert "x-ratelimit-limit-requests" not in headers  # no RPM limit applies


def test_no_limit_no_admission_and_no_headers(world: World) -> None:
    Accounts(world.ledger).grant_credits("acme", 10 * world.worst)
    calls, limiter = limited(world, FakeProvider())
    call = run(start(calls, world.key))
    assert call.opened.rate_limit is None
    receipt = run(calls.complete(call, USAGE, ttfb_ms=1.0))
    assert not any(name.startswith("x-ratelimit") for name in receipt_headers(receipt, call.opened))
    assert limiter.settled == []


def test_the_key_and_the_account_limits_both_apply(world: World) -> None:
    Accounts(world.ledger).grant_credits("acme", 100 * world.worst)
    key = key_id(world)
    ApiKeys(world.ledger).set_key_limits(key, rpm=5)
    account_id, _ = Accounts(world.ledger).set_account_limits("acme", rpm=2)
    other = ApiKeys(world.ledger).issue_api_key("acme").plaintext  # the account's limit covers it too
    calls, _ = limited(world, FakeProvider())
    first = run(start(calls, world.key))
    assert [scope.name for scope in first.opened.rate_limit.scopes] == [f"key:{key}", f"account:{account_id}"]
    requests = first.opened.rate_limit.admission.requests
    assert requests is not None and (requests.limit, requests.remaining) == (2, 1)  # the tightest scope
    run(calls.complete(first, USAGE, ttfb_ms=1.0))
    run(calls.complete(run(start(calls, other)), USAGE, ttfb_ms=1.0))
    with pytest.raises(RateLimitExceeded) as refused:
        run(start(calls, world.key))
    assert refused.value.refused_by == f"account:{account_id} requests"
    Accounts(world.ledger).set_account_limits("acme", rpm=0)  # cleared: the key's 5 apply alone
    run(calls.complete(run(start(calls, world.key)), USAGE, ttfb_ms=1.0))


def scoped(world: World, limiter: CountingLimiter) -> str:
    name = f"key:{key_id(world)}"
    assert limiter.slots(name) == 1
    return name


def test_the_parallel_slot_is_released_when_the_call_completes_or_fails(world: World) -> None:
    Accounts(world.ledger).grant_credits("acme", 10 * world.worst)
    ApiKeys(world.ledger).set_key_limits(key_id(world), max_parallel=1)
    calls, limiter = limited(world, FakeProvider())
    call = run(start(calls, world.key))
    name = scoped(world, limiter)
    with pytest.raises(RateLimitExceeded) as second:
        run(start(calls, world.key))
    assert second.value.refused_by == f"{name} parallel requests"
    run(calls.complete(call, USAGE, ttfb_ms=1.0))
    assert limiter.slots(name) == 0
    call = run(start(calls, world.key))
    run(calls.fail(call, 502, "upstream_error"))
    assert limiter.slots(name) == 0
    assert [tokens for _, tokens in limiter.settled] == [USAGE.input_tokens + USAGE.output_tokens, 0]


def test_the_slot_is_released_when_every_attempt_fails(world: World) -> None:
    Accounts(world.ledger).grant_credits("acme", 10 * world.worst)
    ApiKeys(world.ledger).set_key_limits(key_id(world), max_parallel=1)
    calls, limiter = limited(world, FakeProvider(*[UpstreamError("boom", status=502)] * 3))
    with pytest.raises(UpstreamError):
        run(start(calls, world.key))
    assert limiter.slots(f"key:{key_id(world)}") == 0
    assert {lease for lease, _ in limiter.settled} == {"1"} and all(tokens == 0 for _, tokens in limiter.settled)


def test_the_slot_is_released_when_the_hold_is_refused(world: World) -> None:
    ApiKeys(world.ledger).set_key_limits(key_id(world), max_parallel=1, tpm=10**9)  # no credit at all
    calls, limiter = limited(world, FakeProvider())
    with pytest.raises(InsufficientCredits):
        run(start(calls, world.key))
    name = f"key:{key_id(world)}"
    assert limiter.slots(name) == 0 and limiter.tokens_used(name) == 0


def test_a_deferred_hold_refused_at_the_settlement_uses_nothing_and_its_402_carries_the_limits(world: World) -> None:
    Accounts(world.ledger).grant_credits("acme", world.worst)  # saved: the gate defers the whole answer's hold
    ApiKeys(world.ledger).set_key_limits(key_id(world), max_parallel=1, tpm=10**9)
    calls, limiter = limited(world, FakeProvider())
    call = run(start(calls, world.key))
    assert call.opened.deferred_hold is not None
    Accounts(world.ledger).adjust_credits("acme", -world.worst, "operator debit")  # unseen by the gate
    with pytest.raises(InsufficientCredits) as refused:
        run(calls.complete(call, USAGE, ttfb_ms=1.0))
    assert refused.value.admission is not None  # answered with the rate-limit headers
    name = f"key:{key_id(world)}"
    assert limiter.slots(name) == 0 and limiter.tokens_used(name) == 0  # settled once, to nothing used
    assert [tokens for _, tokens in limiter.settled] == [0]


STREAM = StreamScript(batches=((b'{"choices":[{"index":0,"delta":{"content":"hi"}}]}',),))


@pytest.mark.parametrize("ending", ["finished", "client_gone", "broken", "crashed"])
def test_the_slot_is_released_however_a_stream_ends(world: World, ending: str) -> None:
    Accounts(world.ledger).grant_credits("acme", 10 * world.worst)
    ApiKeys(world.ledger).set_key_limits(key_id(world), max_parallel=1, tpm=10**9)
    calls, limiter = limited(world, FakeProvider(stream=STREAM))
    call = run(start(calls, world.key))
    name = scoped(world, limiter)
    meter = StreamMeter(calls, call)
    meter.output_chars = 2
    if ending == "finished":
        meter.usage = Usage(input_tokens=3, output_tokens=2)
    run(getattr(meter, ending)())
    assert limiter.slots(name) == 0
    charged = {"finished": 5, "crashed": 0}
    if ending in charged:
        assert limiter.tokens_used(name) == charged[ending]
    else:  # what was charged: the estimate, or the output delivered
        record = world.record(call.opened.request_id)
        assert limiter.tokens_used(name) == record.details.usage.input_tokens + record.details.usage.output_tokens
    assert len({lease for lease, _ in limiter.settled}) == 1


def test_a_cancelled_caller_before_the_start_releases_the_slot(world: World) -> None:
    Accounts(world.ledger).grant_credits("acme", 10 * world.worst)
    ApiKeys(world.ledger).set_key_limits(key_id(world), max_parallel=1)
    provider = FakeProvider()
    calls, limiter = limited(world, provider)

    async def scenario() -> None:
        provider.gate = asyncio.Event()  # the upstream call never starts
        task = asyncio.ensure_future(start(calls, world.key))
        while not provider.routes:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(scenario())
    assert limiter.slots(f"key:{key_id(world)}") == 0


def test_limits_set_by_command_are_events_and_validated(world: World) -> None:
    keys = ApiKeys(world.ledger)
    key = keys.set_key_limits(key_id(world), rpm=60, tpm=1000)
    assert (key.rate_limits.rpm, key.rate_limits.tpm, key.rate_limits.max_parallel) == (60, 1000, None)
    key = keys.set_key_limits(key.id, tpm=0, max_parallel=4)  # 0 clears, None keeps
    assert (key.rate_limits.rpm, key.rate_limits.tpm, key.rate_limits.max_parallel) == (60, None, 4)
    version = key.version
    assert keys.set_key_limits(key.id, rpm=60).version == version  # nothing changed: no event
    from domain.errors import InvalidRequest

    for bad in (-1, 10**9 + 1, True):
        with pytest.raises(InvalidRequest):
            keys.set_key_limits(key.id, rpm=bad)
    rotated = keys.rotate_api_key(key.id)
    assert world.ledger.get_api_key(rotated.issued.key_id).rate_limits == key.rate_limits
    _, limits = Accounts(world.ledger).set_account_limits("acme", max_parallel=3)
    assert limits.max_parallel == 3 and Accounts(world.ledger).get_account_limits("acme")[1] == limits


def test_scopes_read_the_accounts_limits_and_remember_an_account_without_any(world: World) -> None:
    scopes = RateLimitScopes(world.ledger)
    key = world.ledger.authenticate(world.key)
    assert scopes.of(key.id, key.account_id) == []
    accounts = Accounts(world.ledger, limits_changed=scopes.forget)
    accounts.set_account_limits("acme", rpm=7)
    assert [s.name for s in scopes.of(key.id, key.account_id)] == [f"account:{key.account_id}"]
    assert scopes.of(key.id, key.account_id)[0] == LimitScope(f"account:{key.account_id}", limits_of(world))


def limits_of(world: World) -> Any:
    return Accounts(world.ledger).get_account_limits("acme")[1]


def test_an_account_without_limits_is_remembered_for_the_read_cache_time_and_forgotten_when_set() -> None:
    from adapters.bootstrap import in_memory_ledger

    ledger = in_memory_ledger(read_cache_seconds=1.0)
    ledger.initialise()
    account = Accounts(ledger).create_account("acme")
    key = ApiKeys(ledger).issue_api_key("acme")
    moment = [100.0]
    scopes = RateLimitScopes(ledger, clock=lambda: moment[0])
    assert scopes.of(key.key_id, account.id) == []
    Accounts(ledger).set_account_limits("acme", rpm=3)  # not told to the scopes: remembered as unlimited
    assert scopes.of(key.key_id, account.id) == []
    moment[0] += 1.5  # the read cache's time has passed
    assert [scope.limits.rpm for scope in scopes.of(key.key_id, account.id)] == [3]
    Accounts(ledger, limits_changed=scopes.forget).set_account_limits("acme", rpm=0)
    assert scopes.of(key.key_id, account.id) == []
    Accounts(ledger, limits_changed=scopes.forget).set_account_limits("acme", max_parallel=2)  # told: read at once
    assert [scope.limits.max_parallel for scope in scopes.of(key.key_id, account.id)] == [2]


class AwaitingLimiter:
    """A limiter that awaits (as Redis does), over the in-process one."""

    def __init__(self) -> None:
        self.inner = InProcessRateLimiter()
        self.settled = 0
        self.done = asyncio.Event()

    async def admit(self, scopes: Any, tokens: int, now: float) -> Admission:
        await asyncio.sleep(0)
        return await self.inner.admit(scopes, tokens, now)

    async def settle(self, scopes: Any, admission: Admission, tokens: int, now: float) -> None:
        await asyncio.sleep(0)
        await self.inner.settle(scopes, admission, tokens, now)
        self.settled += 1
        self.done.set()


def test_a_limiter_that_awaits_is_settled_even_when_the_caller_is_cancelled_meanwhile(world: World) -> None:
    ApiKeys(world.ledger).set_key_limits(key_id(world), max_parallel=1)
    limiter = AwaitingLimiter()
    limits = RequestLimits(limiter, RateLimitScopes(world.ledger), clock=lambda: NOW)
    key = world.ledger.authenticate(world.key)

    async def scenario() -> None:
        admitted = await limits.admit(key.id, key.account_id, lambda: 0)
        assert admitted is not None
        task = asyncio.ensure_future(limits.settle(admitted, 0))
        await asyncio.sleep(0)  # the settlement is waiting on the limiter
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(limiter.done.wait(), 10)  # the settlement went on without its caller
        assert limiter.settled == 1
        assert await limits.admit(key.id, key.account_id, lambda: 0) is not None  # the slot is free again

    run(scenario())
