"""The ``RateLimiter`` contract (application/ports.py), as functions that take a limiter
factory: tests/unit/limits/test_in_process_limiter.py runs them against the in-process
limiter, the Redis tests against Redis. Each check names its scopes afresh (a uuid), so
limiters sharing a store do not see each other's checks; each passes its own ``now``.

Usage: ``for check in CONTRACT: asyncio.run(check(make_limiter))`` or parametrise over
``CONTRACT`` (``check.__name__`` names the rule)."""

from collections.abc import Callable, Coroutine
from typing import Any
from uuid import uuid4

from application.ports import LimitScope, RateLimiter
from domain.rate_limits import RateLimits

MakeLimiter = Callable[[], RateLimiter]
T0 = 1_700_000_000.25  # a fixed epoch second (and a quarter): the window arithmetic is exact


def scope(kind: str = "key", **limits: int) -> LimitScope:
    return LimitScope(f"{kind}:{uuid4()}", RateLimits(**limits))


async def rpm_admits_n_then_refuses_until_the_first_leaves_the_window(make: MakeLimiter) -> None:
    limiter, key = make(), scope(rpm=3)
    for offset in (0, 10, 20):
        admission = await limiter.admit([key], 0, T0 + offset)
        assert admission.admitted
        await limiter.settle([key], admission, 0, T0 + offset)
    refused = await limiter.admit([key], 0, T0 + 30)
    assert not refused.admitted
    assert refused.refused_by == f"{key.name} requests"
    assert refused.requests is not None and refused.requests.remaining == 0 and refused.requests.limit == 3
    # the first request's bucket (second int(T0)) leaves the window at int(T0) + 60
    assert abs(refused.retry_after_seconds - (int(T0) + 60 - (T0 + 30))) < 1e-6
    assert not (await limiter.admit([key], 0, int(T0) + 59.999)).admitted
    assert (await limiter.admit([key], 0, int(T0) + 60)).admitted


async def remaining_counts_down_and_names_the_tightest_scope(make: MakeLimiter) -> None:
    limiter, key, account = make(), scope(rpm=5), scope("account", rpm=2)
    first = await limiter.admit([key, account], 0, T0)
    assert first.requests is not None and (first.requests.limit, first.requests.remaining) == (2, 1)
    second = await limiter.admit([key, account], 0, T0 + 1)
    assert second.requests is not None and second.requests.remaining == 0 and second.requests.reset_seconds > 0
    third = await limiter.admit([key, account], 0, T0 + 2)
    assert not third.admitted and third.refused_by == f"{account.name} requests"


async def all_scopes_or_none(make: MakeLimiter) -> None:
    limiter, key, account = make(), scope(rpm=10, tpm=1000, max_parallel=5), scope("account", rpm=1)
    assert (await limiter.admit([account], 0, T0)).admitted  # the account's one request
    refused = await limiter.admit([key, account], 100, T0 + 1)
    assert not refused.admitted
    # the key took nothing: alone it still has all 10 requests and 1000 tokens
    for i in range(5):
        admission = await limiter.admit([key], 200, T0 + 2)
        assert admission.admitted, i
        await limiter.settle([key], admission, 200, T0 + 2)
    assert not (await limiter.admit([key], 1, T0 + 3)).admitted  # 1000 tokens used


async def tpm_admits_the_worst_case_and_settle_corrects_it(make: MakeLimiter) -> None:
    limiter, key = make(), scope(tpm=1000)
    first = await limiter.admit([key], 800, T0)
    assert first.admitted and first.tokens is not None and first.tokens.remaining == 200
    assert not (await limiter.admit([key], 300, T0 + 1)).admitted
    await limiter.settle([key], first, 100, T0 + 2)  # it used 100 of the 800 it could have
    second = await limiter.admit([key], 300, T0 + 3)
    assert second.admitted and second.tokens is not None and second.tokens.remaining == 600


async def tpm_refuses_more_than_the_limit_itself(make: MakeLimiter) -> None:
    limiter, key = make(), scope(tpm=100)
    refused = await limiter.admit([key], 101, T0)
    assert not refused.admitted and refused.refused_by == f"{key.name} tokens" and refused.retry_after_seconds > 0


async def settle_never_goes_below_zero_and_is_idempotent(make: MakeLimiter) -> None:
    limiter, key = make(), scope(tpm=100, max_parallel=1)
    first = await limiter.admit([key], 60, T0)
    await limiter.settle([key], first, -5, T0)
    await limiter.settle([key], first, 0, T0)  # twice: nothing more taken back, no slot freed twice
    second = await limiter.admit([key], 100, T0 + 1)
    assert second.admitted  # the 60 were given back once: 0 used of 100
    assert not (await limiter.admit([key], 0, T0 + 1)).admitted  # the one slot is taken
    await limiter.settle([key], first, 0, T0 + 2)  # the first's lease again: frees nothing
    assert not (await limiter.admit([key], 0, T0 + 2)).admitted


async def max_parallel_refuses_the_next_until_one_settles(make: MakeLimiter) -> None:
    limiter, key = make(), scope(max_parallel=2)
    first = await limiter.admit([key], 0, T0)
    second = await limiter.admit([key], 0, T0)
    assert first.admitted and second.admitted and first.lease != second.lease
    refused = await limiter.admit([key], 0, T0)
    assert not refused.admitted and refused.refused_by == f"{key.name} parallel requests"
    assert refused.retry_after_seconds > 0
    await limiter.settle([key], second, 0, T0 + 1)
    assert (await limiter.admit([key], 0, T0 + 1)).admitted


async def a_lease_never_settled_frees_itself_after_its_ttl(make: MakeLimiter) -> None:
    """The factory's limiter keeps leases for 900 s (the default hold TTL)."""
    limiter, key = make(), scope(max_parallel=1)
    assert (await limiter.admit([key], 0, T0)).admitted
    assert not (await limiter.admit([key], 0, T0 + 899)).admitted
    assert (await limiter.admit([key], 0, T0 + 901)).admitted


async def a_refusal_takes_nothing(make: MakeLimiter) -> None:
    limiter, key = make(), scope(rpm=2, max_parallel=1)
    held = await limiter.admit([key], 0, T0)
    for _ in range(5):
        assert not (await limiter.admit([key], 0, T0)).admitted  # refused by the slot: no request counted
    await limiter.settle([key], held, 0, T0)
    assert (await limiter.admit([key], 0, T0 + 1)).admitted  # the second of 2 requests


async def no_scopes_admits(make: MakeLimiter) -> None:
    admission = await make().admit([], 10**9, T0)
    assert admission.admitted and admission.requests is None and admission.tokens is None


async def limits_that_do_not_apply_report_nothing(make: MakeLimiter) -> None:
    limiter, key = make(), scope(max_parallel=3)
    admission = await limiter.admit([key], 10, T0)
    assert admission.admitted and admission.requests is None and admission.tokens is None


Check = Callable[[MakeLimiter], Coroutine[Any, Any, None]]
CONTRACT: list[Check] = [
    rpm_admits_n_then_refuses_until_the_first_leaves_the_window,
    remaining_counts_down_and_names_the_tightest_scope,
    all_scopes_or_none,
    tpm_admits_the_worst_case_and_settle_corrects_it,
    tpm_refuses_more_than_the_limit_itself,
    settle_never_goes_below_zero_and_is_idempotent,
    max_parallel_refuses_the_next_until_one_settles,
    a_lease_never_settled_frees_itself_after_its_ttl,
    a_refusal_takes_nothing,
    no_scopes_admits,
    limits_that_do_not_apply_report_nothing,
]
