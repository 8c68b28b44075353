"""The in-process limiter (application/rate_limits.py) keeps the RateLimiter contract
(tests/unit/limits/limiter_contract.py), and its cost per request is small."""

import asyncio

import pytest

from application.rate_limits import InProcessRateLimiter
from tests.unit.limits.limiter_contract import CONTRACT, Check


@pytest.mark.parametrize("check", CONTRACT, ids=lambda check: check.__name__)
def test_in_process_limiter_keeps_the_contract(check: Check) -> None:
    asyncio.run(check(lambda: InProcessRateLimiter(lease_seconds=900)))


def test_settle_of_a_refusal_does_nothing() -> None:
    async def run() -> None:
        from tests.unit.limits.limiter_contract import T0, scope

        limiter = InProcessRateLimiter()
        key = scope(max_parallel=1)
        held = await limiter.admit([key], 0, T0)
        refused = await limiter.admit([key], 0, T0)
        await limiter.settle([key], refused, 0, T0)  # a refusal has no lease: frees nobody's slot
        assert not (await limiter.admit([key], 0, T0)).admitted
        await limiter.settle([key], held, 0, T0)
        assert (await limiter.admit([key], 0, T0)).admitted

    asyncio.run(run())
