"""Server mode's rate limiter: the windows of every ``serve`` process live in Redis, so a
limit holds exactly across processes (two processes give a 60 RPM key 60 requests a minute,
not 120).

Invariants:
- one Lua script call per admission checks every scope and takes every limit at once, or
  none (Redis runs a script atomically: no other process's admission interleaves); one
  script call per settlement corrects the tokens and frees the parallel slot;
- RPM and TPM: a sliding window of 60 one-second buckets (the bucket of ``int(now)``, the
  caller's clock), at most the limit in any 60 s; parallel slots: leases that expire after
  the hold TTL, so a lease a crashed process never settled frees itself;
- a settlement is idempotent: the token correction is made once (the lease's entry is read
  and deleted in the same script), releasing a released slot does nothing;
- Redis unreachable or slow (``REDIS_TIMEOUT_SECONDS``): the request is admitted with no window
  state (limits fail open; money is still guarded by the ledger), counted in
  ``failed_open_total``, logged once when the outage starts and once when Redis answers
  again. During an outage Redis is tried again at most every ``retry_seconds``; the others
  are admitted without waiting for a timeout. ``settle`` never raises.

Redis is reached through adapters/redis_pipe.py (one pipelined connection per process, a few
microseconds a call), not redis-py's asyncio client (0.15–0.3 ms of the event loop a call).

Keys, under ``{prefix}:rl:{scope}`` (a scope is ``key:<uuid>`` or ``account:<uuid>``):
``:r`` and ``:t`` (hashes: second -> requests, tokens; they expire 61 s after their last
write), ``:p`` (a sorted set: lease -> expiry; it expires after the hold TTL). A lease that
took tokens has ``{prefix}:rl:lease:{lease}`` = ``"<second> <tokens>"`` until it is settled.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from collections.abc import Sequence
from typing import Any

from adapters.redis_pipe import RedisPipe, RedisUnavailable, ReplyError, Script
from application.ports import Admission, LimitScope, WindowState

log = logging.getLogger("tallyhub.limits")

# Redis' answer waits its turn on the event loop too: at 20 requests at once a freshly started
# ``serve`` timed out at 100 ms and failed open with Redis up (tests/e2e/test_rate_limits_server_mode.py).
# A Redis that refuses connections fails at once; one that does not answer costs the
# requests of one ``retry_seconds`` this much, the others are admitted without trying.
REDIS_TIMEOUT_SECONDS = 0.5
RETRY_SECONDS = 1.0  # during an outage, Redis is tried again at most this often
WINDOW_SECONDS = 60
PARALLEL_RETRY_SECONDS = 1.0  # when a parallel slot frees cannot be known (as application/rate_limits.py)

# KEYS: per scope, its :r, :t and :p keys; then the lease's key.
# ARGV: now, tokens, lease, hold TTL, then per scope "rpm tpm max_parallel" (-1: no limit).
# Returns, as one string of numbers separated by spaces (one reply to read, not eleven):
# admitted, then per scope: requests used and free at, tokens used and free at,
# parallel slots used. ``used`` counts this request when admitted; ``free at`` is the second
# at which the window has room again for what was asked (after this request when admitted):
# 0 when it has room now, -1 when it never will (more than the limit itself).
_ADMIT = """
local now = tonumber(ARGV[1])
local tokens = tonumber(ARGV[2])
local lease = ARGV[3]
local ttl = tonumber(ARGV[4])
local sec = math.floor(now)
local oldest = sec - 59
local scopes = (#KEYS - 1) / 3
local limits = {}
for s = 1, scopes do
  local rpm, tpm, par = string.match(ARGV[4 + s], '(%-?%d+) (%-?%d+) (%-?%d+)')
  limits[s] = {tonumber(rpm), tonumber(tpm), tonumber(par)}
end

local function window(key)
  local fields = redis.call('HGETALL', key)
  local used, buckets = 0, {}
  for i = 1, #fields, 2 do
    local b = tonumber(fields[i])
    if b < oldest then
      redis.call('HDEL', key, fields[i])
    else
      local v = tonumber(fields[i + 1])
      used = used + v
      table.insert(buckets, {b, v})
    end
  end
  return used, buckets
end

local function free_at(buckets, used, need, limit)
  if used + need <= limit then return 0 end
  if need > limit then return -1 end
  table.sort(buckets, function(x, y) return x[1] < y[1] end)
  for _, bucket in ipairs(buckets) do
    used = used - bucket[2]
    if used + need <= limit then return bucket[1] + 60 end
  end
  return -1
end

local state = {}
local admitted = 1
for s = 1, scopes do
  local rpm, tpm, par = limits[s][1], limits[s][2], limits[s][3]
  local st = {}
  if rpm >= 0 then
    st.r_used, st.r_buckets = window(KEYS[3 * s - 2])
    if st.r_used + 1 > rpm then admitted = 0 end
  end
  if tpm >= 0 then
    st.t_used, st.t_buckets = window(KEYS[3 * s - 1])
    if st.t_used + tokens > tpm then admitted = 0 end
  end
  if par >= 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[3 * s], '-inf', now)
    st.p_used = redis.call('ZCARD', KEYS[3 * s])
    if st.p_used + 1 > par then admitted = 0 end
  end
  state[s] = st
end

local out = {admitted}
local took_tokens = false
for s = 1, scopes do
  local rpm, tpm, par = limits[s][1], limits[s][2], limits[s][3]
  local st = state[s]
  if rpm >= 0 then
    if admitted == 1 then
      redis.call('HINCRBY', KEYS[3 * s - 2], sec, 1)
      redis.call('EXPIRE', KEYS[3 * s - 2], 61)
      st.r_used = st.r_used + 1
      table.insert(st.r_buckets, {sec, 1})
    end
    table.insert(out, st.r_used)
    table.insert(out, free_at(st.r_buckets, st.r_used, 1, rpm))
  else
    table.insert(out, 0)
    table.insert(out, 0)
  end
  if tpm >= 0 then
    if admitted == 1 and tokens > 0 then
      redis.call('HINCRBY', KEYS[3 * s - 1], sec, tokens)
      redis.call('EXPIRE', KEYS[3 * s - 1], 61)
      st.t_used = st.t_used + tokens
      table.insert(st.t_buckets, {sec, tokens})
      took_tokens = true
    end
    table.insert(out, st.t_used)
    table.insert(out, free_at(st.t_buckets, st.t_used, tokens, tpm))
  else
    table.insert(out, 0)
    table.insert(out, 0)
  end
  if par >= 0 then
    if admitted == 1 then
      redis.call('ZADD', KEYS[3 * s], now + ttl, lease)
      redis.call('EXPIRE', KEYS[3 * s], math.ceil(ttl) + 1)
      st.p_used = st.p_used + 1
    end
    table.insert(out, st.p_used)
  else
    table.insert(out, 0)
  end
end
if took_tokens then
  redis.call('SET', KEYS[#KEYS], sec .. ' ' .. tokens, 'EX', math.ceil(ttl) + 61)
end
return table.concat(out, ' ')
"""

# KEYS: the lease's key, then the :t keys of the scopes with a TPM limit, then every scope's
# :p key. ARGV: now, tokens (the real usage), lease, how many :t keys.
# The worst case taken at admission is corrected in its own bucket while that bucket is in
# the window (never below 0); a request that outlived the window adds what it used beyond
# the worst case to the current second instead.
_SETTLE = """
local now = tonumber(ARGV[1])
local tokens = tonumber(ARGV[2])
local lease = ARGV[3]
local token_keys = tonumber(ARGV[4])
local entry = redis.call('GET', KEYS[1])
if entry then
  redis.call('DEL', KEYS[1])
  local sep = string.find(entry, ' ')
  local sec, worst = tonumber(string.sub(entry, 1, sep - 1)), tonumber(string.sub(entry, sep + 1))
  local delta = tokens - worst
  local current = math.floor(now)
  for i = 2, 1 + token_keys do
    if sec > current - 60 then
      if delta ~= 0 and redis.call('EXISTS', KEYS[i]) == 1 then
        local left = redis.call('HINCRBY', KEYS[i], sec, delta)
        if left <= 0 then redis.call('HDEL', KEYS[i], sec) end
      end
    elseif delta > 0 then
      redis.call('HINCRBY', KEYS[i], current, delta)
      redis.call('EXPIRE', KEYS[i], 61)
    end
  end
end
for i = 2 + token_keys, #KEYS do
  redis.call('ZREM', KEYS[i], lease)
end
return 1
"""

ADMIT_SCRIPT = Script(_ADMIT.encode())
SETTLE_SCRIPT = Script(_SETTLE.encode())
_NO_LIMIT = -1
NOT_LIMITED = Admission(True, 0.0, None, None, None, "")
_OPEN = "open:"  # the lease of an admission made while Redis was unreachable
_NOTHING_HELD = "r:"  # the lease of an admission that took requests only (no tokens, no slot)


def _limit(value: int | None) -> int:
    return _NO_LIMIT if value is None else value


class RedisRateLimiter:
    """The ``RateLimiter`` of server mode (see the module's invariants). ``failed_open_total``
    counts the admissions made without Redis; ``outage`` is True while Redis is unreachable."""

    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        hold_ttl_seconds: float,
        timeout: float = REDIS_TIMEOUT_SECONDS,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self._keys = f"{prefix}:rl"
        self.hold_ttl_seconds = hold_ttl_seconds
        self.retry_seconds = retry_seconds
        self._client = RedisPipe(url, timeout=timeout)  # adapters/redis_pipe.py: a few µs a call, pipelined
        self._leases = itertools.count()
        self._process = secrets.token_hex(6)
        self.failed_open_total = 0
        self.outage = False
        self._next_try = 0.0  # monotonic: during an outage, when Redis is tried again

    async def admit(self, scopes: Sequence[LimitScope], tokens: int, now: float) -> Admission:
        if not scopes:
            return NOT_LIMITED
        lease = f"{self._process}-{next(self._leases)}"
        if not any(scope.limits.tpm is not None or scope.limits.max_parallel is not None for scope in scopes):
            lease = _NOTHING_HELD + lease  # no tokens to correct, no slot to free: settle need not call Redis
        if self.outage and time.monotonic() < self._next_try:
            return self._open(lease)
        keys: list[str] = []
        tokens = max(tokens, 0)
        args: list[Any] = [repr(now), tokens, lease, self.hold_ttl_seconds]
        for scope in scopes:
            base = f"{self._keys}:{scope.name}"
            keys += (f"{base}:r", f"{base}:t", f"{base}:p")
            limits = scope.limits
            args.append(f"{_limit(limits.rpm)} {_limit(limits.tpm)} {_limit(limits.max_parallel)}")
        keys.append(f"{self._keys}:lease:{lease}")
        try:
            answer = await self._client.run_script(ADMIT_SCRIPT, keys, args)
        except (ReplyError, OSError) as exc:
            self._lost(exc)
            return self._open(lease)
        self._reached()
        return _admission(scopes, tokens, now, lease, [int(number) for number in answer.split()])

    async def settle(self, scopes: Sequence[LimitScope], admission: Admission, tokens: int, now: float) -> None:
        lease = admission.lease
        if not lease or lease.startswith((_OPEN, _NOTHING_HELD)):
            return  # a refusal, no scope, requests only, or admitted while Redis was unreachable
        token_keys = [f"{self._keys}:{scope.name}:t" for scope in scopes if scope.limits.tpm is not None]
        keys = [f"{self._keys}:lease:{lease}", *token_keys, *(f"{self._keys}:{scope.name}:p" for scope in scopes)]
        try:
            await self._client.run_script(SETTLE_SCRIPT, keys, [repr(now), max(tokens, 0), lease, len(token_keys)])
        except (ReplyError, OSError) as exc:
            self._lost(exc)  # the lease expires on its own; the worst case stays counted
        else:
            self._reached()

    async def aclose(self) -> None:
        await self._client.aclose()

    def _open(self, lease: str) -> Admission:
        self.failed_open_total += 1
        return Admission(True, 0.0, None, None, None, _OPEN + lease)

    def _lost(self, exc: BaseException) -> None:
        self._next_try = time.monotonic() + self.retry_seconds
        if not self.outage:
            self.outage = True
            log.warning("rate limits: Redis unreachable (%s); requests are admitted without limits", _reason(exc))

    def _reached(self) -> None:
        if self.outage:
            self.outage = False
            log.info("rate limits: Redis answers again; limits hold")


def _admission(scopes: Sequence[LimitScope], tokens: int, now: float, lease: str, answer: list[int]) -> Admission:
    """Read the script's answer as the in-process limiter answers (application/rate_limits.py):
    admitted, the tightest RPM and TPM windows; refused, the refusing windows, the first
    refusing limit's name and when every refusing limit has room again."""
    admitted = answer[0] == 1
    requests: WindowState | None = None
    token_state: WindowState | None = None
    refused_by: str | None = None
    retry_after = 0.0
    for index, scope in enumerate(scopes):
        limits = scope.limits
        used_r, free_r, used_t, free_t, used_p = answer[1 + 5 * index : 6 + 5 * index]
        if limits.rpm is not None:
            wait = _wait(free_r, now)
            if admitted:
                requests = _tightest(requests, WindowState(limits.rpm, max(limits.rpm - used_r, 0), wait))
            elif used_r + 1 > limits.rpm:
                refused_by = refused_by or f"{scope.name} requests"
                retry_after = max(retry_after, wait)
                requests = _tightest(requests, WindowState(limits.rpm, 0, wait))
        if limits.tpm is not None:
            wait = _wait(free_t, now)
            if admitted:
                token_state = _tightest(token_state, WindowState(limits.tpm, max(limits.tpm - used_t, 0), wait))
            elif used_t + tokens > limits.tpm:
                refused_by = refused_by or f"{scope.name} tokens"
                retry_after = max(retry_after, wait)
                token_state = _tightest(token_state, WindowState(limits.tpm, 0, wait))
        if limits.max_parallel is not None and not admitted and used_p + 1 > limits.max_parallel:
            refused_by = refused_by or f"{scope.name} parallel requests"
            retry_after = max(retry_after, PARALLEL_RETRY_SECONDS)
    if not admitted:
        return Admission(False, retry_after, refused_by, requests, token_state, "")
    return Admission(True, 0.0, None, requests, token_state, lease)


def _wait(free_at: int, now: float) -> float:
    if free_at == 0:
        return 0.0
    if free_at < 0:
        return float(WINDOW_SECONDS)  # more than the limit itself: never fits; a minute is the honest floor
    return max(free_at - now, 0.001)


def _tightest(current: WindowState | None, state: WindowState) -> WindowState:
    if current is None or state.remaining < current.remaining:
        return state
    return current


__all__ = ["RedisRateLimiter"]


def _reason(exc: BaseException) -> str:
    """What went wrong, for the log: our own messages in full (they name no secret), else the class."""
    if isinstance(exc, RedisUnavailable):
        return f"{type(exc).__name__}: {exc}"
    return type(exc).__name__
