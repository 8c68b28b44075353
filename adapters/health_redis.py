"""Server mode's shared credential health: every ``serve`` adds its attempts and failures
to counters in Redis, where one Lua script applies application/health.py's policy to the
counts of all processes, and every process hears each cooldown on a pub/sub channel and
applies it to its own view.

Invariants:
- reading "is this credential cooling" never leaves the process (CredentialHealth's own
  view); the hot path only adds to counters under a lock. A thread of this module's
  sends them (at once after a failure or a 429, else at most every ``flush_seconds``),
  another listens for cooldowns;
- one script call per credential and flush counts, decides and announces atomically, on
  Redis' clock: two processes never trip on the same burst twice, and no host's clock
  matters (a cooldown travels as the milliseconds it has left);
- a process that (re)subscribes first reads every cooldown in force, so a restarted
  ``serve`` or one that lost Redis for a while agrees with the others again;
- Redis slow or down costs these threads a timeout, never a request: the process then
  decides on its own counts (``shared`` is False) and says so once in the log;
  correctness never depends on health.

Keys, under ``{prefix}:health``: ``:window:{credential}`` (a hash of the window's slices,
``a<slot>``/``f<slot>`` attempts and failures), ``:streak:{credential}`` (trips in a row),
``:cooling`` (credential -> ``"<until ms> <reason>"``); the channel is ``{prefix}:health``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis

from adapters.workers.wake import REDIS_TIMEOUT_SECONDS, redis_client
from application.health import CredentialHealth, HealthPolicy

log = logging.getLogger("tallyhub.health")

FLUSH_SECONDS = 0.25  # successes are sent at most this often; failures and 429s at once

_RECORD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cred = ARGV[1]
local attempts, failures, limit_ms = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local bucket_ms, buckets = tonumber(ARGV[5]), tonumber(ARGV[6])
local until_ms, reason = 0, ''
local entry = redis.call('HGET', KEYS[3], cred)
if entry then
  local sep = string.find(entry, ' ')
  until_ms, reason = tonumber(string.sub(entry, 1, sep - 1)), string.sub(entry, sep + 1)
  if until_ms <= now then
    redis.call('HDEL', KEYS[3], cred)
    until_ms, reason = 0, ''
  end
end
local cooling = until_ms > now
local slot = math.floor(now / bucket_ms)
if attempts > 0 then
  redis.call('HINCRBY', KEYS[1], 'a' .. slot, attempts)
  if failures > 0 then redis.call('HINCRBY', KEYS[1], 'f' .. slot, failures) end
  redis.call('PEXPIRE', KEYS[1], bucket_ms * (buckets + 1))
end
if attempts > failures and not cooling then redis.call('DEL', KEYS[2]) end
local tripped = false
if limit_ms > 0 and now + limit_ms > until_ms then
  until_ms, reason, tripped = now + limit_ms, 'rate_limited', true
elseif failures > 0 and not cooling then
  local fields = redis.call('HGETALL', KEYS[1])
  local a, f = 0, 0
  for i = 1, #fields, 2 do
    local name = fields[i]
    if tonumber(string.sub(name, 2)) <= slot - buckets then
      redis.call('HDEL', KEYS[1], name)
    elseif string.sub(name, 1, 1) == 'a' then
      a = a + tonumber(fields[i + 1])
    else
      f = f + tonumber(fields[i + 1])
    end
  end
  if f >= tonumber(ARGV[7]) and f >= tonumber(ARGV[8]) * a then
    local streak = redis.call('INCR', KEYS[2])
    redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[12]))
    local ms = math.min(tonumber(ARGV[9]) * 2 ^ (streak - 1), tonumber(ARGV[10]))
    until_ms, reason, tripped = now + math.floor(ms), 'failing', true
    redis.call('DEL', KEYS[1])
  end
end
if tripped then
  redis.call('HSET', KEYS[3], cred, string.format('%d %s', until_ms, reason))
  redis.call('PUBLISH', ARGV[11], string.format('%s %d %s', cred, until_ms - now, reason))
end
if until_ms > now then return {until_ms - now, reason} end
return {0, ''}
"""

_SNAPSHOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local entry = fields[i + 1]
  local sep = string.find(entry, ' ')
  local until_ms = tonumber(string.sub(entry, 1, sep - 1))
  if until_ms > now then
    table.insert(out, fields[i])
    table.insert(out, until_ms - now)
    table.insert(out, string.sub(entry, sep + 1))
  else
    redis.call('HDEL', KEYS[1], fields[i])
  end
end
return out
"""


def health_channel(prefix: str) -> str:
    return f"{prefix}:health"


class RedisHealthSync:
    """Shares ``health`` with the other processes (see the module's invariants); it is
    ``health.sync`` from construction on and talks to Redis once started."""

    def __init__(
        self,
        url: str,
        prefix: str,
        health: CredentialHealth,
        *,
        flush_seconds: float = FLUSH_SECONDS,
        timeout: float = REDIS_TIMEOUT_SECONDS,
        retry_seconds: float = 1.0,
    ) -> None:
        self.url = url
        self.health = health
        self.policy: HealthPolicy = health.policy
        self.channel = health_channel(prefix)
        self._keys = f"{prefix}:health"
        self.flush_seconds = flush_seconds
        self.retry_seconds = retry_seconds
        self._client = redis_client(url, timeout=timeout)
        self._record = self._client.register_script(_RECORD)
        self._snapshot = self._client.register_script(_SNAPSHOT)
        self._pending: dict[str, list[int]] = {}  # credential -> [attempts, failures] not yet sent
        self._limits: dict[str, float] = {}  # credential -> 429 cooldown (seconds) not yet sent
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._shared = False
        self._failing = False
        self._state_lock = threading.Lock()  # the sender thread and a caller's flush may both see Redis go
        self.subscribed = threading.Event()
        health.sync = self

    # --- the hot path (HealthSync) ---------------------------------------------------

    @property
    def shared(self) -> bool:
        return self._shared

    def record(self, credential_id: str, *, failed: bool) -> None:
        with self._lock:
            counts = self._pending.get(credential_id)
            if counts is None:
                counts = self._pending[credential_id] = [0, 0]
            counts[0] += 1
            counts[1] += failed
        if failed:
            self._wake.set()

    def rate_limited(self, credential_id: str, seconds: float) -> None:
        with self._lock:
            self._limits[credential_id] = max(seconds, self._limits.get(credential_id, 0.0))
        self._wake.set()

    # --- the threads ----------------------------------------------------------------

    def start(self) -> RedisHealthSync:
        if not self._threads:
            self._stop.clear()
            self._threads = [
                threading.Thread(target=self._send_loop, name="tallyhub-health-sender", daemon=True),
                threading.Thread(target=self._listen_loop, name="tallyhub-health-listener", daemon=True),
            ]
            for thread in self._threads:
                thread.start()
        return self

    def close(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []
        self._client.close()

    def _send_loop(self) -> None:
        self._reach()
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self.flush()
        self.flush()

    def _reach(self) -> None:
        try:
            self._client.ping()
        except redis.RedisError as exc:
            self._lost(exc)
        else:
            self._reached()

    def flush(self) -> None:
        """Send what was counted since the last flush; apply the cooldowns Redis decided."""
        with self._lock:
            pending, self._pending = self._pending, {}
            limits, self._limits = self._limits, {}
        if not pending and not limits:
            return
        policy = self.policy
        credentials = list(pending.keys() | limits.keys())
        try:
            pipe = self._client.pipeline(transaction=False)
            for credential in credentials:
                attempts, failures = pending.get(credential, (0, 0))
                self._record(
                    keys=[
                        f"{self._keys}:window:{credential}",
                        f"{self._keys}:streak:{credential}",
                        f"{self._keys}:cooling",
                    ],
                    args=[
                        credential,
                        attempts,
                        failures,
                        round(limits.get(credential, 0.0) * 1000),
                        round(policy.bucket_seconds * 1000),
                        policy.buckets,
                        policy.min_failures,
                        policy.failure_ratio,
                        round(policy.first_cooldown_seconds * 1000),
                        round(policy.max_failure_cooldown_seconds * 1000),
                        self.channel,
                        round((10 * policy.window_seconds + policy.max_failure_cooldown_seconds) * 1000),
                    ],
                    client=pipe,
                )
            answers = pipe.execute()
        except redis.RedisError as exc:
            self._lost(exc)
            return
        self._reached()
        for credential, (left_ms, reason) in zip(credentials, answers, strict=True):
            if int(left_ms) > 0:
                self.health.apply(credential, int(left_ms) / 1000, _text(reason))

    def _listen_loop(self) -> None:
        failing = False
        while not self._stop.is_set():
            client = redis_client(
                self.url,
                timeout=self.retry_seconds + 4.0,
                health_check_interval=10,
                client_name=f"tallyhub-serve:{self.channel}",
            )
            try:
                # redis-py leaves Redis.pubsub unannotated (it returns a redis.client.PubSub)
                with client.pubsub(ignore_subscribe_messages=True) as pubsub:  # type: ignore[no-untyped-call]
                    pubsub.subscribe(self.channel)
                    self._load(client)  # what cooled while this process was not listening
                    self.subscribed.set()
                    if failing:
                        log.info("listening for credential cooldowns on Redis again")
                    failing = False
                    while not self._stop.is_set():
                        message = pubsub.get_message(timeout=self.retry_seconds)
                        if message is not None:
                            self._heard(message.get("data"))
            except redis.RedisError as exc:
                self.subscribed.clear()
                if not failing:
                    log.warning("cannot listen for credential cooldowns on Redis (%s); retrying", exc)
                failing = True
                self._stop.wait(self.retry_seconds)
            finally:
                client.close()

    def _load(self, client: redis.Redis) -> None:
        entries = self._snapshot(keys=[f"{self._keys}:cooling"], client=client)
        for i in range(0, len(entries) - 2, 3):
            self.health.apply(_text(entries[i]), int(entries[i + 1]) / 1000, _text(entries[i + 2]))

    def _heard(self, data: Any) -> None:
        parts = _text(data).split(" ")
        if len(parts) == 3 and parts[1].isdigit():
            self.health.apply(parts[0], int(parts[1]) / 1000, parts[2])

    def _lost(self, exc: BaseException) -> None:
        with self._state_lock:
            self._shared = False
            was_failing, self._failing = self._failing, True
        if not was_failing:
            log.warning(
                "cannot share credential health through Redis (%s): this process decides cooldowns "
                "on its own counts until Redis answers again",
                exc,
            )

    def _reached(self) -> None:
        with self._state_lock:
            self._shared = True
            was_failing, self._failing = self._failing, False
        if was_failing:
            log.info("Redis answers again: credential cooldowns are shared")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
