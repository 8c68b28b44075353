"""RedisRateLimiter against the real Redis on 127.0.0.1:6379 (every key prefix is this test's):
RPM exact to the second over a sliding 60 s window, all scopes or none, TPM corrected at
settlement once, parallel leases released and expiring, a limit exact across two processes;
and against a Redis of the test's own that it stops and starts again: requests admitted,
counted and logged once while it is down, limits holding again once it is back."""

import asyncio
import logging
import multiprocessing
import secrets
import shutil
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
import redis

from adapters.rate_limits_redis import RedisRateLimiter
from application.ports import Admission, LimitScope, WindowState
from domain.rate_limits import RateLimits
from tests.support.own_redis import OwnRedis
from tests.unit.limits.limiter_contract import CONTRACT, Check

pytestmark = pytest.mark.redis

REDIS_URL = "redis://127.0.0.1:6379/0"
KEY = "key:6d1a0a64-2b55-4c3e-9f4c-8f1f7b0c2a11"
ACCOUNT = "account:0b8e4f52-7c1d-4a8b-a0c9-3c2e1d5f6a77"
NOW = 1_800_000_000.25
T = TypeVar("T")


def run(scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(scenario())


@pytest.fixture
def prefix() -> Iterator[str]:
    prefix = f"th-test-{secrets.token_hex(6)}"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    client.close()


def limiter(prefix: str, url: str = REDIS_URL, **kwargs: float) -> RedisRateLimiter:
    return RedisRateLimiter(url, prefix, hold_ttl_seconds=kwargs.pop("hold_ttl_seconds", 900), **kwargs)


def key(**limits: int) -> list[LimitScope]:
    return [LimitScope(KEY, RateLimits(**limits))]


@pytest.mark.parametrize("check", CONTRACT, ids=lambda check: check.__name__)
def test_redis_limiter_keeps_the_contract(check: Check, prefix: str) -> None:
    async def scenario() -> None:
        made: list[RedisRateLimiter] = []

        def make() -> RedisRateLimiter:
            made.append(limiter(prefix))
            return made[-1]

        try:
            await check(make)
        finally:
            for lim in made:
                await lim.aclose()

    run(scenario)


def test_rpm_admits_exactly_the_limit_in_any_60_seconds(prefix: str) -> None:
    async def scenario() -> list[tuple[bool, float]]:
        lim = limiter(prefix)
        seen = []
        for now in (NOW, NOW + 10, NOW + 20, NOW + 59.5, NOW + 59.75, NOW + 60.0, NOW + 70):
            admission = await lim.admit(key(rpm=3), 0, now)
            seen.append((admission.admitted, admission.retry_after_seconds))
        await lim.aclose()
        return seen

    seen = run(scenario)
    # the first request's bucket (second 1_800_000_000) leaves the window at NOW + 59.75
    assert seen == [(True, 0.0), (True, 0.0), (True, 0.0), (False, 0.25), (True, 0.0), (False, 9.75), (True, 0.0)]


def test_window_state_reports_the_tightest_scope(prefix: str) -> None:
    async def scenario() -> tuple[Admission, Admission]:
        lim = limiter(prefix)
        scopes = [LimitScope(KEY, RateLimits(rpm=10, tpm=1000)), LimitScope(ACCOUNT, RateLimits(rpm=2, tpm=5000))]
        first = await lim.admit(scopes, 100, NOW)
        second = await lim.admit(scopes, 100, NOW + 1)
        await lim.aclose()
        return first, second

    first, second = run(scenario)
    assert first.requests == WindowState(limit=2, remaining=1, reset_seconds=0.0)  # the account's, not the key's
    assert first.tokens == WindowState(limit=1000, remaining=900, reset_seconds=0.0)  # the key's
    # the account has no room left: the first request's second leaves the window in 58.75 s
    assert second.requests == WindowState(limit=2, remaining=0, reset_seconds=58.75)


def test_a_refusal_by_one_scope_takes_nothing_from_the_others(prefix: str) -> None:
    async def scenario() -> list[tuple[bool, str | None]]:
        lim = limiter(prefix)
        both = [LimitScope(KEY, RateLimits(rpm=2, tpm=100)), LimitScope(ACCOUNT, RateLimits(rpm=1))]
        seen = [await lim.admit(both, 10, NOW), await lim.admit(both, 10, NOW)]
        # the key's second request and its 90 tokens are still free: the refusal took none of them
        seen.append(await lim.admit(both[:1], 90, NOW))
        seen.append(await lim.admit(both[:1], 0, NOW))
        await lim.aclose()
        return [(a.admitted, a.refused_by) for a in seen]

    assert run(scenario) == [(True, None), (False, f"{ACCOUNT} requests"), (True, None), (False, f"{KEY} requests")]


def test_tokens_are_admitted_on_the_worst_case_and_corrected_once_at_settlement(prefix: str) -> None:
    async def scenario() -> list[bool]:
        lim = limiter(prefix)
        scopes = key(tpm=100)
        first = await lim.admit(scopes, 80, NOW)
        seen = [first.admitted, (await lim.admit(scopes, 30, NOW)).admitted]
        await lim.settle(scopes, first, 10, NOW + 1)
        await lim.settle(scopes, first, 10, NOW + 1)  # idempotent: not corrected twice
        seen.append((await lim.admit(scopes, 90, NOW + 2)).admitted)  # 10 + 90
        seen.append((await lim.admit(scopes, 1, NOW + 2)).admitted)
        await lim.aclose()
        return seen

    assert run(scenario) == [True, False, True, False]


def test_a_request_that_outlived_the_window_counts_its_excess_now(prefix: str) -> None:
    async def scenario() -> list[bool]:
        lim = limiter(prefix)
        scopes = key(tpm=100)
        long = await lim.admit(scopes, 10, NOW)
        await lim.settle(scopes, long, 70, NOW + 90)  # 60 more than admitted, used by now
        seen = [(await lim.admit(scopes, 40, NOW + 91)).admitted, (await lim.admit(scopes, 1, NOW + 91)).admitted]
        await lim.aclose()
        return seen

    assert run(scenario) == [True, False]


def test_parallel_slots_are_released_at_settlement_and_expire_after_the_hold_ttl(prefix: str) -> None:
    async def scenario() -> list[tuple[bool, float]]:
        lim = limiter(prefix, hold_ttl_seconds=30)
        scopes = key(max_parallel=2)
        first = await lim.admit(scopes, 0, NOW)
        seen = [first, await lim.admit(scopes, 0, NOW + 1), await lim.admit(scopes, 0, NOW + 2)]
        await lim.settle(scopes, first, 0, NOW + 3)
        seen += [await lim.admit(scopes, 0, NOW + 3), await lim.admit(scopes, 0, NOW + 4)]
        seen.append(await lim.admit(scopes, 0, NOW + 31.5))  # the second one's lease (NOW + 1) expired
        await lim.aclose()
        return [(a.admitted, a.retry_after_seconds) for a in seen]

    assert run(scenario) == [(True, 0.0), (True, 0.0), (False, 1.0), (True, 0.0), (False, 1.0), (True, 0.0)]


def _admit_many(prefix: str, count: int, start: "multiprocessing.synchronize.Event") -> int:
    async def scenario() -> int:
        lim = limiter(prefix)
        admitted = 0
        for _ in range(count):
            admitted += (await lim.admit(key(rpm=60, tpm=6000, max_parallel=1000), 100, NOW)).admitted
        await lim.aclose()
        return admitted

    start.wait(30)
    return asyncio.run(scenario())


def test_a_limit_holds_exactly_across_two_processes(prefix: str) -> None:
    context = multiprocessing.get_context("spawn")
    start = context.Manager().Event()
    with context.Pool(2) as pool:
        results = [pool.apply_async(_admit_many, (prefix, 50, start)) for _ in range(2)]
        start.set()
        admitted = [result.get(60) for result in results]
    assert sum(admitted) == 60 and min(admitted) > 0  # 100 asked, both processes served, 60 admitted


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    own = OwnRedis()
    yield own
    own.stop()


def test_with_redis_down_requests_are_admitted_counted_and_logged_once_and_limits_hold_when_it_is_back(
    own_redis: OwnRedis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    own_redis.start()
    url = own_redis.url
    caplog.set_level(logging.INFO, logger="tallyhub.limits")

    async def before() -> tuple[RedisRateLimiter, list[Admission]]:
        lim = limiter(prefix, url, retry_seconds=0)
        scopes = key(rpm=1, max_parallel=1)
        held = await lim.admit(scopes, 0, NOW)
        return lim, [held, await lim.admit(scopes, 0, NOW)]

    async def during(lim: RedisRateLimiter, held: Admission) -> list[Admission]:
        scopes = key(rpm=1, max_parallel=1)
        seen = [await lim.admit(scopes, 0, NOW + 1) for _ in range(3)]
        await lim.settle(scopes, held, 0, NOW + 1)  # never raises
        await lim.settle(scopes, seen[0], 0, NOW + 1)
        return seen

    async def after(lim: RedisRateLimiter) -> list[Admission]:
        scopes = key(rpm=1)
        seen = [await lim.admit(scopes, 0, NOW + 2), await lim.admit(scopes, 0, NOW + 3)]
        await lim.aclose()
        return seen

    loop = asyncio.new_event_loop()
    try:
        lim, seen = loop.run_until_complete(before())
        assert [a.admitted for a in seen] == [True, False]
        assert lim.failed_open_total == 0 and not lim.outage
        own_redis.stop()
        down = loop.run_until_complete(during(lim, seen[0]))
        assert all(a.admitted and a.requests is None and a.tokens is None for a in down)
        assert lim.failed_open_total == 3 and lim.outage
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "Redis unreachable" in warnings[0].getMessage()
        own_redis.start()  # the same port, an empty Redis
        back = loop.run_until_complete(after(lim))
    finally:
        loop.close()
    assert [a.admitted for a in back] == [True, False]
    assert lim.failed_open_total == 3 and not lim.outage
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 1 and "answers again" in infos[0].getMessage()
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_during_an_outage_redis_is_tried_at_most_every_retry_seconds(own_redis: OwnRedis, prefix: str) -> None:
    own_redis.start()
    url = own_redis.url
    own_redis.stop()

    async def scenario() -> tuple[bool, int]:
        lim = limiter(prefix, url, retry_seconds=3600)
        await lim.admit(key(rpm=1), 0, NOW)
        own_redis.start()
        # Redis is back, but the limiter waits out retry_seconds before it tries again
        admitted = [(await lim.admit(key(rpm=1), 0, NOW)).admitted for _ in range(3)]
        await lim.aclose()
        return all(admitted), lim.failed_open_total

    assert run(scenario) == (True, 4)


def test_settling_a_request_that_took_requests_only_does_not_call_redis(own_redis: OwnRedis, prefix: str) -> None:
    own_redis.start()

    async def scenario() -> tuple[bool, bool]:
        lim = limiter(prefix, own_redis.url, retry_seconds=0)
        requests_only = await lim.admit(key(rpm=5), 100, NOW)
        with_tokens = await lim.admit(key(rpm=5, tpm=1000), 100, NOW)
        own_redis.stop()
        await lim.settle(key(rpm=5), requests_only, 10, NOW)
        untouched = not lim.outage
        await lim.settle(key(rpm=5, tpm=1000), with_tokens, 10, NOW)  # this one calls Redis: never raises
        await lim.aclose()
        return untouched, lim.outage

    assert run(scenario) == (True, True)
