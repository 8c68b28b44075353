"""Rate limits at run time: ``RequestLimits`` admits a request against the scopes it counts
against (``RateLimitScopes``: its API key's and its account's limits, read through the
ledger's read cache) or refuses it (``RateLimitExceeded``), and settles it; the in-process
``RateLimiter`` (``InProcessRateLimiter``: embedded mode, and server mode until a shared one
is configured). The port and its semantics are application/ports.py's ``RateLimiter``.

Invariants the in-process limiter keeps (tests/unit/limits/limiter_contract.py):
- RPM and TPM over a sliding window of 60 one-second buckets (the bucket of ``int(now)``): a
  request is admitted only if, in every scope, the sum of the last 60 buckets plus this
  request stays within the limit, so no 60 s window ever holds more than the limit;
- all scopes or none: a refusal takes nothing anywhere;
- a parallel slot is a lease that expires after ``lease_seconds`` (the hold TTL), so one a
  request never settled frees itself; ``settle`` releases it once (it is idempotent) and
  corrects the tokens counted in the bucket of admission to the real count (never below 0).

Everything runs on the event loop without awaiting, so each admission is atomic.
"""

import asyncio
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from uuid import UUID

import anyio

from application.ledger import Ledger
from application.ports import Admission, LimitScope, RateLimiter, WindowState
from domain.api_key import ApiKey
from domain.errors import RateLimitExceeded
from domain.rate_limits import AccountRateLimits, RateLimits, account_limits_id

WINDOW_SECONDS = 60
PARALLEL_RETRY_SECONDS = 1.0  # when a parallel slot frees cannot be known: try again in a second

NOT_LIMITED = Admission(True, 0.0, None, None, None, "")


class _Window:
    """One scope's counts per second for one dimension (requests or tokens)."""

    __slots__ = ("buckets", "total")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}  # second -> amount, oldest first
        self.total = 0

    def prune(self, second: int) -> None:
        cutoff = second - WINDOW_SECONDS
        buckets = self.buckets
        while buckets:
            oldest = next(iter(buckets))
            if oldest > cutoff:
                break
            self.total -= buckets.pop(oldest)

    def add(self, second: int, amount: int) -> None:
        self.buckets[second] = self.buckets.get(second, 0) + amount
        self.total += amount

    def take_back(self, second: int, amount: int) -> None:
        held = self.buckets.get(second)
        if held is not None:
            back = min(held, amount)
            self.buckets[second] = held - back
            self.total -= back

    def reset_seconds(self, now: float, limit: int, asked: int) -> float:
        """Seconds until ``asked`` more fits within ``limit`` (0 when it fits now)."""
        total = self.total
        if total + asked <= limit:
            return 0.0
        for bucket, amount in self.buckets.items():
            total -= amount
            if total + asked <= limit:
                return max(bucket + WINDOW_SECONDS - now, 0.001)
        return float(WINDOW_SECONDS)  # more than the limit itself: never fits; a minute is the honest floor


class _Scope:
    __slots__ = ("requests", "tokens", "slots")

    def __init__(self) -> None:
        self.requests = _Window()
        self.tokens = _Window()
        self.slots: dict[str, float] = {}  # lease -> expiry (time.time())

    def free_slots(self, now: float) -> None:
        for lease in [lease for lease, expiry in self.slots.items() if expiry <= now]:
            del self.slots[lease]


@dataclass(slots=True)
class _Lease:
    second: int
    tokens: int
    scopes: tuple[str, ...]
    expiry: float


class InProcessRateLimiter:
    """The ``RateLimiter`` port in this process's memory (see the module's invariants)."""

    def __init__(self, lease_seconds: float = 900.0) -> None:
        self.lease_seconds = lease_seconds
        self._scopes: dict[str, _Scope] = {}
        self._leases: dict[str, _Lease] = {}  # oldest first
        self._numbers = itertools.count(1)

    async def admit(self, scopes: Sequence[LimitScope], tokens: int, now: float) -> Admission:
        return self.admit_now(scopes, tokens, now)

    async def settle(self, scopes: Sequence[LimitScope], admission: Admission, tokens: int, now: float) -> None:
        self.settle_now(admission, tokens)

    def admit_now(self, scopes: Sequence[LimitScope], tokens: int, now: float) -> Admission:
        second = int(now)
        tokens = max(tokens, 0)
        if self._leases:
            self._expire_leases(now)
        states = []
        refused_by: str | None = None
        retry_after = 0.0
        requests: WindowState | None = None
        token_state: WindowState | None = None
        for scope in scopes:
            limits = scope.limits
            state = self._scopes.get(scope.name)
            if state is None:
                state = self._scopes[scope.name] = _Scope()
            states.append(state)
            if limits.rpm is not None:
                state.requests.prune(second)
                wait = state.requests.reset_seconds(now, limits.rpm, 1)
                if wait > 0:
                    refused_by = refused_by or f"{scope.name} requests"
                    retry_after = max(retry_after, wait)
                    requests = _tightest(requests, WindowState(limits.rpm, 0, wait))
            if limits.tpm is not None:
                state.tokens.prune(second)
                wait = state.tokens.reset_seconds(now, limits.tpm, tokens)
                if wait > 0:
                    refused_by = refused_by or f"{scope.name} tokens"
                    retry_after = max(retry_after, wait)
                    token_state = _tightest(token_state, WindowState(limits.tpm, 0, wait))
            if limits.max_parallel is not None:
                if len(state.slots) >= limits.max_parallel:
                    state.free_slots(now)
                if len(state.slots) >= limits.max_parallel:
                    refused_by = refused_by or f"{scope.name} parallel requests"
                    retry_after = max(retry_after, PARALLEL_RETRY_SECONDS)
        if refused_by is not None:
            return Admission(False, retry_after, refused_by, requests, token_state, "")
        lease = str(next(self._numbers))
        expiry = now + self.lease_seconds
        for scope, state in zip(scopes, states, strict=True):
            limits = scope.limits
            if limits.rpm is not None:
                state.requests.add(second, 1)
                left = limits.rpm - state.requests.total
                reset = state.requests.reset_seconds(now, limits.rpm, 1) if left <= 0 else 0.0
                requests = _tightest(requests, WindowState(limits.rpm, max(left, 0), reset))
            if limits.tpm is not None:
                state.tokens.add(second, tokens)
                left = limits.tpm - state.tokens.total
                token_state = _tightest(
                    token_state,
                    WindowState(limits.tpm, max(left, 0), state.tokens.reset_seconds(now, limits.tpm, tokens)),
                )
            if limits.max_parallel is not None:
                state.slots[lease] = expiry
        self._leases[lease] = _Lease(second, tokens, tuple(scope.name for scope in scopes), expiry)
        return Admission(True, 0.0, None, requests, token_state, lease)

    async def aclose(self) -> None:
        """Nothing to release: the windows live in this process's memory."""

    def settle_now(self, admission: Admission, tokens: int) -> None:
        lease = self._leases.pop(admission.lease, None)
        if lease is None:
            return  # settled already, expired, or never admitted
        back = lease.tokens - max(tokens, 0)
        for name in lease.scopes:
            state = self._scopes.get(name)
            if state is None:
                continue
            state.slots.pop(admission.lease, None)
            if back > 0:
                state.tokens.take_back(lease.second, back)
            elif back < 0:
                state.tokens.add(lease.second, -back)  # used more than its worst case: counted as used

    def _expire_leases(self, now: float) -> None:
        leases = self._leases
        while leases:
            oldest = next(iter(leases))
            if leases[oldest].expiry > now:
                break
            del leases[oldest]


def _tightest(current: WindowState | None, state: WindowState) -> WindowState:
    if current is None or state.remaining < current.remaining:
        return state
    return current


@dataclass(frozen=True, slots=True)
class AdmittedRequest:
    """A request the limiter admitted: what its settlement needs."""

    scopes: tuple[LimitScope, ...]
    admission: Admission


class RequestLimits:
    """Admits and settles requests: ``limiter`` (the port) over ``scopes``; ``clock``: the
    epoch seconds the limiter's windows are counted in."""

    def __init__(self, limiter: RateLimiter, scopes: "RateLimitScopes", clock: Callable[[], float] = time.time) -> None:
        self.limiter = limiter
        self.scopes = scopes
        self.clock = clock
        # the in-process limiter never awaits: called directly, with no coroutine and no shield
        self._local = limiter if isinstance(limiter, InProcessRateLimiter) else None
        self._settling: set[asyncio.Future[None]] = set()

    async def admit(self, api_key_id: UUID, account_id: UUID, tokens: Callable[[], int]) -> AdmittedRequest | None:
        """None when no limit applies to the request; raises RateLimitExceeded (with the
        limiter's answer) when one refuses it. ``tokens``: its worst case, asked only when a
        tokens-per-minute limit applies (else 0 tokens are admitted)."""
        scopes = self.scopes.of(api_key_id, account_id)
        if not scopes:
            return None
        asked = tokens() if any(scope.limits.tpm is not None for scope in scopes) else 0
        if self._local is not None:
            admission = self._local.admit_now(scopes, asked, self.clock())
        else:
            admission = await self.limiter.admit(scopes, asked, self.clock())
        if not admission.admitted:
            refused_by = admission.refused_by or "a rate limit"
            raise RateLimitExceeded(refused_by, retry_after_header(admission.retry_after_seconds), admission)
        return AdmittedRequest(tuple(scopes), admission)

    async def settle(self, admitted: AdmittedRequest, tokens: int) -> None:
        """Correct the tokens to ``tokens`` and free the slot, whatever cancels the caller
        meanwhile (the caller going away is one of the endings it settles)."""
        if self._local is not None:
            self._local.settle_now(admitted.admission, tokens)
            return
        # a task of its own: it runs to its end even when the caller is cancelled (by an anyio
        # scope or by asyncio), and is kept referenced until then
        settling = asyncio.ensure_future(self.limiter.settle(admitted.scopes, admitted.admission, tokens, self.clock()))
        self._settling.add(settling)
        settling.add_done_callback(self._settling.discard)
        with anyio.CancelScope(shield=True):
            await asyncio.shield(settling)


class RateLimitScopes:
    """The scopes a request counts against: its key's limits (the authenticated ``ApiKey``)
    and its account's (``AccountRateLimits``, through the ledger's read cache; an account
    without limits is remembered as such for the same ``read_cache_seconds``)."""

    def __init__(self, ledger: Ledger, clock: Callable[[], float] = time.monotonic) -> None:
        self.ledger = ledger
        self.clock = clock
        self._unlimited: dict[UUID, float] = {}  # account id -> until when it is known to have no limits

    def of(self, api_key_id: UUID, account_id: UUID) -> list[LimitScope]:
        """The scopes with a limit set: the key's (the authenticated key, from the read
        cache), then its account's."""
        scopes = []
        key = self.ledger.recent(api_key_id)
        if isinstance(key, ApiKey) and key.rate_limits.any:
            scopes.append(LimitScope(f"key:{api_key_id}", key.rate_limits))
        account_limits = self.account_limits(account_id)
        if account_limits.any:
            scopes.append(LimitScope(f"account:{account_id}", account_limits))
        return scopes

    def account_limits(self, account_id: UUID) -> RateLimits:
        until = self._unlimited.get(account_id)
        if until is not None:
            if until > self.clock():
                return RateLimits()
            del self._unlimited[account_id]
        found = self.ledger.recent(account_limits_id(account_id))
        if isinstance(found, AccountRateLimits) and found.limits.any:
            return found.limits
        seconds = self.ledger.read_cache_seconds
        if seconds > 0:
            if len(self._unlimited) > 100_000:
                self._unlimited.clear()
            self._unlimited[account_id] = self.clock() + seconds
        return RateLimits()

    def forget(self, account_id: UUID) -> None:
        """The account's limits changed in this process: read them afresh next time."""
        self._unlimited.pop(account_id, None)


def retry_after_header(seconds: float) -> int:
    """Whole seconds for ``Retry-After``: rounded up, at least 1."""
    return max(1, math.ceil(seconds))
