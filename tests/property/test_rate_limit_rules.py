"""The in-process limiter (application/rate_limits.py) never admits more than a limit in
any 60-second window, whatever the sequence of admissions, settlements (at most the worst
case, as charges are) and clock advances over two keys sharing an account: requests per
minute and tokens per minute (as finally counted) in every window of 60 whole seconds,
parallel requests at every moment; and it refuses only when a limit is really full."""

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from application.ports import LimitScope
from application.rate_limits import WINDOW_SECONDS, InProcessRateLimiter
from domain.rate_limits import RateLimits

T0 = 1_700_000_000.0
TTL = 300.0

limit = st.one_of(st.none(), st.integers(1, 6))
token_limit = st.one_of(st.none(), st.integers(1, 2_000))
limits = st.builds(RateLimits, rpm=limit, tpm=token_limit, max_parallel=limit)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("admit"), st.integers(0, 1), st.integers(0, 800)),
        st.tuples(st.just("settle"), st.integers(0, 30), st.floats(0, 1)),
        st.tuples(st.just("advance"), st.floats(0, 40)),
    ),
    max_size=60,
)


@settings(max_examples=400, deadline=None)
@given(st.lists(limits, min_size=3, max_size=3), operations)
def test_admissions_never_exceed_a_limit_in_any_window(scope_limits: list[RateLimits], ops: list[tuple]) -> None:
    asyncio.run(_run(scope_limits, ops))


async def _run(scope_limits: list[RateLimits], ops: list[tuple]) -> None:
    key_a, key_b, account = (
        LimitScope(name, lim) for name, lim in zip(("key:a", "key:b", "account:x"), scope_limits, strict=True)
    )
    limiter = InProcessRateLimiter(lease_seconds=TTL)
    now = T0
    admitted: list[dict] = []  # second, tokens (final), scopes, admission, open, expiry
    for op in ops:
        if op[0] == "advance":
            now += op[1]
        elif op[0] == "settle":
            if not admitted:
                continue
            request = admitted[op[1] % len(admitted)]
            used = int(request["worst"] * op[2])
            await limiter.settle(request["scopes"], request["admission"], used, now)
            if request["open"] and request["expiry"] > now:
                request["tokens"] = used
            request["open"] = False
        else:
            scopes = [key_a if op[1] == 0 else key_b, account]
            tokens = op[2]
            full = _full(scopes, admitted, tokens, now)
            admission = await limiter.admit(scopes, tokens, now)
            assert admission.admitted != bool(full), (full, admission)
            if admission.admitted:
                admitted.append(
                    {
                        "second": int(now),
                        "tokens": tokens,
                        "worst": tokens,
                        "scopes": scopes,
                        "admission": admission,
                        "open": True,
                        "expiry": now + TTL,
                    }
                )
        _check(scope_limits, (key_a, key_b, account), admitted, now)


def _in(scope: LimitScope, request: dict) -> bool:
    return any(s.name == scope.name for s in request["scopes"])


def _full(scopes: list[LimitScope], admitted: list[dict], tokens: int, now: float) -> list[str]:
    """The limits the model says have no room for this request."""
    second = int(now)
    full = []
    for scope in scopes:
        recent = [r for r in admitted if _in(scope, r) and r["second"] > second - WINDOW_SECONDS]
        if scope.limits.rpm is not None and len(recent) + 1 > scope.limits.rpm:
            full.append(f"{scope.name} requests")
        if scope.limits.tpm is not None and sum(r["tokens"] for r in recent) + tokens > scope.limits.tpm:
            full.append(f"{scope.name} tokens")
        in_flight = [r for r in admitted if _in(scope, r) and r["open"] and r["expiry"] > now]
        if scope.limits.max_parallel is not None and len(in_flight) >= scope.limits.max_parallel:
            full.append(f"{scope.name} parallel")
    return full


def _check(scope_limits: list[RateLimits], scopes: tuple[LimitScope, ...], admitted: list[dict], now: float) -> None:
    for scope in scopes:
        mine = [r for r in admitted if _in(scope, r)]
        for start in {r["second"] for r in mine}:
            window = [r for r in mine if start <= r["second"] < start + WINDOW_SECONDS]
            if scope.limits.rpm is not None:
                assert len(window) <= scope.limits.rpm
            if scope.limits.tpm is not None:
                assert sum(r["tokens"] for r in window) <= scope.limits.tpm
        if scope.limits.max_parallel is not None:
            assert len([r for r in mine if r["open"] and r["expiry"] > now]) <= scope.limits.max_parallel
