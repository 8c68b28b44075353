"""Credential health: which credentials are cooling down, and why.

Policy (``HealthPolicy``; application/failover_policy.py says which outcome is which):
- a 429 is the provider telling us: the credential cools for its Retry-After (30 s when it
  names none we can read), at most 10 minutes;
- any other failure another attempt may not repeat (a 5xx, a timeout, a broken
  connection) is counted, beside every attempt, in a window of the last 30 s; the
  credential cools only when that window holds at least 3 failures and they are at least
  half its attempts. No single failure cools anything, so one 5xx or one hanging call
  never takes a provider's only credential away from every tenant;
- such a trip cools for 5 s, doubled on each trip that follows another with no success
  between, at most 60 s; a trip empties the window, so once it ends it takes a new burst
  of failures to trip again;
- a refused credential (401/403) is not a matter of health: it is disabled through the
  ledger, as events every process sees.

Health only orders and leaves out candidates; correctness never depends on it. It is kept
in this process; in server mode a ``HealthSync`` (adapters/health_redis.py) shares the
counts and the cooldowns with every ``serve`` through Redis: trips are then decided there,
on the counts of all processes, and each process applies them to its own view, so reading
"is this credential cooling" never leaves the process. While the shared store does not
answer, this process decides on its own counts.
"""

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

RATE_LIMITED = "rate_limited"  # the provider answered 429
FAILING = "failing"  # failures reached the policy's rate
TRACKED_CREDENTIALS = 10_000  # past this many, credentials neither cooling nor counted lately are forgotten


@dataclass(frozen=True)
class HealthPolicy:
    window_seconds: float = 30.0
    buckets: int = 10  # the window is counted in this many slices
    min_failures: int = 3
    failure_ratio: float = 0.5
    first_cooldown_seconds: float = 5.0
    max_failure_cooldown_seconds: float = 60.0
    rate_limit_seconds: float = 30.0  # a 429 whose Retry-After we cannot read
    max_rate_limit_seconds: float = 600.0

    @property
    def bucket_seconds(self) -> float:
        return self.window_seconds / self.buckets

    def trips(self, attempts: int, failures: int) -> bool:
        """True when a window's counts call for a cooldown."""
        return failures >= self.min_failures and failures >= self.failure_ratio * attempts

    def failure_cooldown(self, streak: int) -> float:
        """The cooldown of the ``streak``-th trip in a row (1 for the first)."""
        cooldown: float = self.first_cooldown_seconds * 2 ** max(streak - 1, 0)
        return min(cooldown, self.max_failure_cooldown_seconds)

    def rate_limit_cooldown(self, retry_after: float | None) -> float:
        """How long a 429 cools its credential: the provider's word, within reason."""
        if retry_after is None or not math.isfinite(retry_after):
            return self.rate_limit_seconds
        return min(max(retry_after, 1.0), self.max_rate_limit_seconds)


@dataclass(frozen=True)
class Cooldown:
    seconds: float  # left
    reason: str  # RATE_LIMITED or FAILING


class HealthSync(Protocol):
    """Where a process shares what it learns (server mode: Redis). Never blocks, never raises."""

    @property
    def shared(self) -> bool:
        """True while the shared store answers: trips are then decided there."""

    def record(self, credential_id: str, *, failed: bool) -> None: ...

    def rate_limited(self, credential_id: str, seconds: float) -> None: ...


@dataclass
class _State:
    counts: dict[int, list[int]] = field(default_factory=dict)  # window slice -> [attempts, failures]
    until: float = 0.0  # cooling until (this process's clock)
    reason: str = ""
    streak: int = 0  # trips in a row with no success between


class CredentialHealth:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        policy: HealthPolicy | None = None,
        sync: HealthSync | None = None,
    ) -> None:
        self._clock = clock
        self.policy = policy or HealthPolicy()
        self.sync = sync
        self._states: dict[str, _State] = {}
        self._lock = threading.Lock()

    # --- what happened ---------------------------------------------------------

    def record_success(self, credential_id: str) -> None:
        """The provider answered through this credential (even if it refused the request)."""
        now = self._clock()
        with self._lock:
            state = self._state(credential_id)
            self._count(state, now, failed=False)
            if state.until <= now:
                state.streak = 0
        if self.sync is not None:
            self.sync.record(credential_id, failed=False)

    def record_failure(self, credential_id: str) -> None:
        """A failure another attempt may not repeat (5xx, timeout, connection)."""
        now = self._clock()
        shared = self.sync is not None and self.sync.shared
        with self._lock:
            state = self._state(credential_id)
            self._count(state, now, failed=True)
            if not shared and state.until <= now and self.policy.trips(*_sums(state)):
                state.streak += 1
                self._cool(state, now + self.policy.failure_cooldown(state.streak), FAILING)
        if self.sync is not None:
            self.sync.record(credential_id, failed=True)

    def rate_limited(self, credential_id: str, seconds: float) -> None:
        """The provider answered 429: cool for ``seconds`` (see HealthPolicy.rate_limit_cooldown)."""
        self.apply(credential_id, seconds, RATE_LIMITED)
        if self.sync is not None:
            self.sync.rate_limited(credential_id, seconds)

    def apply(self, credential_id: str, seconds: float, reason: str) -> None:
        """A cooldown decided here or elsewhere (the shared store): the later end wins."""
        if not math.isfinite(seconds) or seconds <= 0:
            return
        now = self._clock()
        with self._lock:
            state = self._state(credential_id)
            until = now + min(
                seconds, max(self.policy.max_rate_limit_seconds, self.policy.max_failure_cooldown_seconds)
            )
            if until > state.until:
                self._cool(state, until, reason)

    # --- what to do about it -------------------------------------------------------

    def cooldown(self, credential_id: str) -> Cooldown | None:
        """This credential's cooldown, or None when it may be tried."""
        state = self._states.get(credential_id)
        if state is None:
            return None
        left = state.until - self._clock()
        return Cooldown(left, state.reason) if left > 0 else None

    def cooling_for(self, credential_id: str) -> float:
        """Seconds left in this credential's cooldown (0 when it may be tried)."""
        cooldown = self.cooldown(credential_id)
        return 0.0 if cooldown is None else cooldown.seconds

    # --- the window -------------------------------------------------------------

    def _state(self, credential_id: str) -> _State:
        state = self._states.get(credential_id)
        if state is None:
            if len(self._states) >= TRACKED_CREDENTIALS:
                self._forget_idle()
            state = self._states[credential_id] = _State()
        return state

    def _forget_idle(self) -> None:
        now = self._clock()
        current = int(now // self.policy.bucket_seconds)
        self._states = {
            credential: state
            for credential, state in self._states.items()
            if state.until > now or any(slot > current - self.policy.buckets for slot in state.counts)
        }

    def _count(self, state: _State, now: float, *, failed: bool) -> None:
        """Count one attempt in the window's current slice (dropping slices past the window)."""
        current = int(now // self.policy.bucket_seconds)
        counts = state.counts.get(current)
        if counts is None:
            oldest = current - self.policy.buckets
            for stale in [slot for slot in state.counts if slot <= oldest]:
                del state.counts[stale]
            counts = state.counts[current] = [0, 0]
        counts[0] += 1
        counts[1] += failed

    @staticmethod
    def _cool(state: _State, until: float, reason: str) -> None:
        state.until, state.reason = until, reason
        if reason == FAILING:
            state.counts.clear()  # a new burst is needed to trip again


def _sums(state: _State) -> tuple[int, int]:
    """The window's attempts and failures."""
    return sum(c[0] for c in state.counts.values()), sum(c[1] for c in state.counts.values())
