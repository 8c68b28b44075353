"""Sending webhook deliveries: the dispatcher (claim, sign, POST, record), the server-mode
dramatiq actor and poller, and the embedded-mode asyncio loop.

Invariants kept here:
- a delivery is POSTed only after this process claimed its row (application/deliveries.py),
  and its outcome is recorded under that claim: any number of dispatchers, dramatiq worker
  threads or processes deliver each attempt once;
- the row is the truth, the dramatiq message only a wake-up: the poller re-enqueues rows
  that are due, so a lost message delays a delivery but never loses it; a duplicated
  message finds the row already claimed or done and does nothing;
- redirects are never followed (a 3xx counts as a failed attempt), no proxy is used, an
  attempt is bounded by the policy's timeout, and the webhook secret is never logged or
  stored in the row.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import anyio

from adapters.crypto.webhook_signature import sign
from adapters.persistence.delivery_store import retry_policy
from adapters.services import Services
from application.deliveries import (
    ERROR_TEXT_LIMIT,
    PENDING,
    Delivery,
    DeliveryRows,
    Outcome,
    RetryPolicy,
    SendResult,
    abandoned,
    outcome_of,
)
from application.notices import Subscribers

log = logging.getLogger("tallyhub.deliveries")
USER_AGENT = "Tallyhub-Webhooks/1"
POLL_SECONDS = 1.0
QUEUE_NAME = "webhooks"
ACTOR_NAME = "tallyhub_deliver_webhook"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx is answered as it is: a failed attempt, never a request to another URL


class UrllibSender:
    """POSTs with the standard library: no redirects, no proxies, a bounded timeout."""

    def __init__(self) -> None:
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())

    def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> SendResult:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            return SendResult(None, "refused: only http and https URLs are delivered to")
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with self.opener.open(request, timeout=timeout) as response:
                return SendResult(int(response.status))
        except urllib.error.HTTPError as error:
            excerpt = error.read(ERROR_TEXT_LIMIT).decode("utf-8", "replace")
            error.close()
            return SendResult(error.code, f"HTTP {error.code}: {excerpt}".strip().rstrip(":"))
        except (OSError, ValueError, http.client.HTTPException) as error:  # refused, reset, timed out, garbled
            reason = getattr(error, "reason", None) or error
            return SendResult(None, f"{type(error).__name__}: {reason}")


class Dispatcher:
    """Claims due deliveries and makes one attempt at each."""

    def __init__(
        self,
        rows: DeliveryRows,
        subscribers: Subscribers,
        *,
        policy: RetryPolicy | None = None,
        sender: Any = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.rows = rows
        self.subscribers = subscribers
        self.policy = policy or RetryPolicy()
        self.sender = sender or UrllibSender()
        self.now = now

    def deliver(self, delivery_id: str) -> Outcome | None:
        """One attempt at ``delivery_id`` if it is due and nobody holds it; None otherwise."""
        token = uuid.uuid4().hex
        now = self.now()
        claimed = self.rows.claim(
            now=now, token=token, lease_until=now + self.policy.lease_seconds, limit=1, delivery_id=delivery_id
        )
        return self._attempt(claimed[0], token) if claimed else None

    def run_due(self, *, limit: int = 100) -> int:
        """Attempt due deliveries one claim at a time (each claim's lease covers one attempt); how many."""
        if not self.rows.due(now=self.now(), limit=1):
            return 0  # a read: an idle poll takes no write lock
        done = 0
        while done < limit:
            token = uuid.uuid4().hex
            now = self.now()
            claimed = self.rows.claim(now=now, token=token, lease_until=now + self.policy.lease_seconds, limit=1)
            if not claimed:
                break
            self._attempt(claimed[0], token)
            done += 1
        return done

    def _attempt(self, delivery: Delivery, token: str) -> Outcome:
        subscribed = self.subscribers.subscribed_to(delivery.notice_type)
        subscription = next((found for found in subscribed if found.webhook_id == delivery.webhook_id), None)
        if subscription is None:
            reason = "the webhook was removed or no longer subscribes to this event"
            outcome = abandoned(delivery, reason, now=self.now())
        else:
            body = delivery.body.encode()
            headers = {
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                "Tallyhub-Event-Id": delivery.event_id,
                "Tallyhub-Signature": sign(subscription.secret, body, int(self.now())),
            }
            result = self.sender.post(delivery.url, body, headers, self.policy.timeout_seconds)
            outcome = outcome_of(delivery, result, now=self.now(), policy=self.policy)
        if not self.rows.record(delivery.delivery_id, token, outcome):
            log.warning("delivery %s: the claim ended before its outcome was recorded", delivery.delivery_id)
        log.info(
            "webhook delivery %s event %s to %s: %s after %d attempt(s)%s",
            delivery.delivery_id,
            delivery.event_id,
            delivery.webhook_id,
            outcome.status,
            outcome.attempts,
            f" ({outcome.last_error})" if outcome.last_error else "",
        )
        return outcome


def dispatcher_for(services: Services) -> Dispatcher:
    """The dispatcher of ``services``' outbox rows and subscribers, with the settings' retry policy."""
    outbox = services.deliveries
    return Dispatcher(outbox.rows, outbox.subscribers, policy=retry_policy(services.settings))


async def run_deliveries(dispatcher: Dispatcher, *, poll_seconds: float = POLL_SECONDS) -> None:
    """Embedded mode: the in-process loop, started by the server's lifespan and cancelled with it."""
    while True:
        try:
            await anyio.to_thread.run_sync(dispatcher.run_due)
        except Exception:  # a failed round must not stop the next one
            log.exception("webhook deliveries failed")
        await asyncio.sleep(poll_seconds)


def dramatiq_namespace(redis_prefix: str) -> str:
    return f"{redis_prefix}:dramatiq"  # under the prefix: deployments (and tests) sharing a Redis never meet


class DramatiqDeliveries:
    """Server mode: a dramatiq actor on Redis makes each attempt; a poller re-enqueues due rows."""

    def __init__(
        self,
        redis_url: str,
        dispatcher: Dispatcher,
        *,
        namespace: str,
        poll_seconds: float = POLL_SECONDS,
        requeue_seconds: float = 30.0,
    ) -> None:
        import dramatiq  # imported here: only server mode needs it
        from dramatiq.brokers.redis import RedisBroker
        from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, ShutdownNotifications, TimeLimit

        self.dispatcher = dispatcher
        self.poll_seconds = poll_seconds
        self.requeue_seconds = requeue_seconds
        # no Retries middleware: the row decides when to try again (a failed message is only a lost wake-up)
        middleware = [AgeLimit(), TimeLimit(), ShutdownNotifications(), Callbacks(), Pipelines()]
        self.broker = RedisBroker(  # type: ignore[no-untyped-call]
            url=redis_url, namespace=namespace, middleware=middleware
        )
        self.actor = dramatiq.actor(broker=self.broker, actor_name=ACTOR_NAME, queue_name=QUEUE_NAME)(self._deliver)
        self._enqueued: dict[str, float] = {}  # id -> when the poller last enqueued it
        self._worker: Any = None

    def _deliver(self, delivery_id: str) -> None:
        outcome = self.dispatcher.deliver(delivery_id)
        if outcome is not None and outcome.status == PENDING and outcome.next_attempt_at is not None:
            delay = max(0.0, outcome.next_attempt_at - self.dispatcher.now())
            self.actor.send_with_options(args=(delivery_id,), delay=int(delay * 1000))

    def enqueue(self, delivery_ids: list[str]) -> None:
        """Wake a worker for each delivery (the outbox's ``queued``); a failure only delays them."""
        try:
            for delivery_id in delivery_ids:
                self.actor.send(delivery_id)
        except Exception:
            log.warning("could not enqueue webhook deliveries: the poller sends them", exc_info=True)

    def poll_once(self) -> int:
        """Enqueue the due rows not enqueued in the last ``requeue_seconds``; how many."""
        now = self.dispatcher.now()
        due = self.dispatcher.rows.due(now=now, limit=1000)
        fresh = [found for found in due if now - self._enqueued.get(found, float("-inf")) >= self.requeue_seconds]
        self._enqueued = {found: self._enqueued.get(found, now) for found in due}  # forget what is no longer due
        for delivery_id in fresh:
            self._enqueued[delivery_id] = now
        self.enqueue(fresh)
        return len(fresh)

    def start_worker(self, *, threads: int = 4) -> None:
        import dramatiq

        self._worker = dramatiq.Worker(self.broker, worker_threads=threads, worker_timeout=1000)
        self._worker.start()

    def stop_worker(self, *, timeout_seconds: float = 30.0) -> None:
        if self._worker is not None:
            self._worker.stop(timeout=int(timeout_seconds * 1000))
            self._worker = None

    def run(self, stop: threading.Event, *, threads: int = 4, grace_seconds: float = 30.0) -> None:
        """The consumer and the poller until ``stop``."""
        self.start_worker(threads=threads)
        try:
            while not stop.is_set():
                try:
                    self.poll_once()
                except Exception:
                    log.exception("polling webhook deliveries failed")
                stop.wait(self.poll_seconds)
        finally:
            self.stop_worker(timeout_seconds=grace_seconds)
            self.broker.close()
