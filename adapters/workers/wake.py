"""Server mode's wake-up signal: ``serve`` tells the ``worker`` processes that events were
committed, through one Redis pub/sub channel.

Invariant: the signal carries nothing and may be lost, late, doubled or spurious; no read
model depends on it. A worker catches up from the positions tracked in PostgreSQL when it
is woken *and* on a fallback poll, so the signal changes only how soon a read model is
fresh, never what it holds.

The hot path pays for :meth:`RedisCommitPublisher.notify` only: it sets a flag (0.1–2 µs).
A thread of the publisher's own turns the flags into at most one ``PUBLISH`` per
``min_interval`` (the first at once, then one more for whatever was committed meanwhile),
so Redis being slow or down costs that thread a timeout, never a request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger("tallyhub.wake")

MIN_INTERVAL_SECONDS = 0.2  # at most 5 PUBLISH per second per process
REDIS_TIMEOUT_SECONDS = 0.5


def wake_channel(prefix: str) -> str:
    return f"{prefix}:projections:wake"


def redis_client(url: str, *, timeout: float = REDIS_TIMEOUT_SECONDS, **kwargs: Any) -> redis.Redis:
    """A client that fails fast: short timeouts and no retries (callers retry on their own schedule)."""
    return redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0), **kwargs
    )


class RedisCommitPublisher:
    """``notify()`` after each commit; at most one ``PUBLISH`` per ``min_interval`` follows."""

    def __init__(
        self,
        url: str,
        channel: str,
        *,
        min_interval: float = MIN_INTERVAL_SECONDS,
        timeout: float = REDIS_TIMEOUT_SECONDS,
    ) -> None:
        self.channel = channel
        self.min_interval = min_interval
        self._client = redis_client(url, timeout=timeout)
        self._committed = False  # set by notify(), cleared just before a PUBLISH
        self._wakeup = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        self.published = 0
        self.failures = 0

    def start(self) -> RedisCommitPublisher:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tallyhub-wake-publisher", daemon=True)
            self._thread.start()
        return self

    def notify(self) -> None:
        """Called on the hot path after a commit: never blocks, never raises."""
        self._committed = True
        if not self._wakeup.is_set():
            self._wakeup.set()

    def close(self, timeout: float = 2.0) -> None:
        """Stop the thread; what was committed and not yet announced is announced first."""
        if self._thread is not None:
            self._stop.set()
            self._wakeup.set()
            self._thread.join(timeout)
            self._thread = None
        self._client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wakeup.wait()
            self._wakeup.clear()
            self._send_pending()
            self._stop.wait(self.min_interval)
        self._send_pending()

    def _send_pending(self) -> None:
        if not self._committed:
            return
        self._committed = False  # a commit after this line is announced by the next PUBLISH
        try:
            self._client.publish(self.channel, b"")
        except redis.RedisError as exc:
            self.failures += 1
            if not self._failing:
                log.warning("cannot wake the workers through Redis (%s); they will catch up by polling", exc)
            self._failing = True
            return
        self.published += 1
        if self._failing:
            log.info("Redis reachable again: waking the workers on commit")
            self._failing = False


class RedisWakeListener:
    """Calls ``on_wake`` for every message on the channel, and once after each (re)subscribe
    (a message may have been missed while not subscribed), until ``stop`` is set."""

    def __init__(self, url: str, channel: str, on_wake: Callable[[], None], *, retry_seconds: float = 1.0) -> None:
        self.url = url
        self.channel = channel
        self.on_wake = on_wake
        self.retry_seconds = retry_seconds
        self.subscribed = threading.Event()
        self.wakes = 0

    def run(self, stop: threading.Event) -> None:
        failing = False
        while not stop.is_set():
            client = redis_client(
                self.url,
                timeout=max(self.retry_seconds, 1.0) + 4.0,
                health_check_interval=10,
                client_name=f"tallyhub-worker:{self.channel}",
            )  # shows in CLIENT LIST
            try:
                # redis-py leaves Redis.pubsub unannotated (it returns a redis.client.PubSub)
                with client.pubsub(ignore_subscribe_messages=True) as pubsub:  # type: ignore[no-untyped-call]
                    pubsub.subscribe(self.channel)
                    self.subscribed.set()
                    if failing:
                        log.info("subscribed to %s again", self.channel)
                    failing = False
                    self.on_wake()
                    self._listen(pubsub, stop)
            except redis.RedisError as exc:
                self.subscribed.clear()
                if not failing:
                    log.warning("cannot listen on Redis for wake-ups (%s); polling until it is back", exc)
                failing = True
                stop.wait(self.retry_seconds)
            finally:
                client.close()

    def _listen(self, pubsub: Any, stop: threading.Event) -> None:
        while not stop.is_set():
            if pubsub.get_message(timeout=self.retry_seconds) is not None:
                self.wakes += 1
                self.on_wake()
