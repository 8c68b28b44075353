"""Webhook deliveries: the outbox that turns each published ``Notice`` into one delivery row
per subscribed webhook, and the retry rule every delivering process follows.

A delivery is a row beside the events (adapters/persistence/delivery_store.py), keyed by
``(event_id, webhook_id)``; the row is the truth and any queue is only a wake-up.

Invariants kept here:
- ``publish`` writes every row before it returns, and a notice published again (a restart,
  a second worker deriving the same alert) adds nothing: the row's key is unique and its id
  is a function of the key;
- a delivery is sent only by the process that claimed it (an atomic compare-and-set with a
  lease and a token); its outcome is recorded only under that token, so two workers never
  both send one attempt, and a worker that died mid-attempt leaves the row to be claimed
  again when the lease ends (a receiver may then see the event twice: it de-duplicates by
  the event id, which never changes);
- attempt ``n`` that fails is retried after ``first_delay × 2^(n-1)`` seconds, capped at
  ``max_delay``; after ``max_attempts`` attempts the row is ``failed`` and is not sent again.
"""

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from application.notices import Notice, Subscribers, Subscription

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
_DELIVERY_NAMESPACE = uuid.UUID("6f2a0d3c-51d8-4f61-9a55-3c1b0e7d9a21")
ERROR_TEXT_LIMIT = 300  # characters of a receiver's answer or an error kept in the row


@dataclass(frozen=True)
class RetryPolicy:
    """How long one attempt may take and when the next one is due (documented in docs/operations.md)."""

    first_delay_seconds: float = 1.0
    max_delay_seconds: float = 3600.0
    max_attempts: int = 15
    timeout_seconds: float = 10.0
    lease_seconds: float = 60.0  # a claim outlives one attempt (timeout + recording) by a wide margin

    def delay_after(self, attempts: int) -> float:
        """Seconds from the ``attempts``-th failed attempt to the next one."""
        exponent = min(max(attempts - 1, 0), 62)
        return float(min(self.max_delay_seconds, self.first_delay_seconds * 2**exponent))


@dataclass(frozen=True)
class Delivery:
    """One notice to one webhook, and where its delivery stands."""

    delivery_id: str
    event_id: str
    webhook_id: str
    notice_type: str
    url: str
    body: str  # the exact JSON text sent (and signed) on every attempt
    status: str  # pending | delivered | failed
    attempts: int
    created_at: float  # unix seconds
    next_attempt_at: float | None  # None once delivered or failed
    last_status: int | None = None  # the receiver's HTTP status on the last attempt; None: no answer
    last_error: str | None = None
    last_attempt_at: float | None = None

    def plain(self) -> dict[str, Any]:
        """The delivery log's JSON (CLI ``webhooks deliveries --json``, ``GET /admin/v1/webhooks/deliveries``)."""
        return {
            "id": self.delivery_id,
            "event_id": self.event_id,
            "webhook_id": self.webhook_id,
            "type": self.notice_type,
            "url": self.url,
            "status": self.status,
            "attempts": self.attempts,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "created_at": _iso(self.created_at),
            "last_attempt_at": _iso(self.last_attempt_at),
            "next_attempt_at": _iso(self.next_attempt_at),
        }


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Outcome:
    """What one attempt changed in its row."""

    status: str
    attempts: int
    last_attempt_at: float
    next_attempt_at: float | None
    last_status: int | None
    last_error: str | None


@dataclass(frozen=True)
class SendResult:
    """A receiver's answer to one POST: its status, or why there was none."""

    status: int | None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class DeliveryRows(Protocol):
    def create_table(self) -> None: ...

    def add(self, deliveries: Sequence[Delivery]) -> int:
        """Insert the rows whose ``(event_id, webhook_id)`` is new; the number inserted."""
        ...

    def claim(
        self, *, now: float, token: str, lease_until: float, limit: int, delivery_id: str | None = None
    ) -> list[Delivery]:
        """Atomically take up to ``limit`` pending rows that are due and not claimed (only
        ``delivery_id`` when given), marking them claimed by ``token`` until ``lease_until``."""
        ...

    def record(self, delivery_id: str, token: str, outcome: Outcome) -> bool:
        """Write ``outcome`` and release the claim, only if ``token`` still holds it."""
        ...

    def due(self, *, now: float, limit: int) -> list[str]:
        """Ids of pending rows that are due and not claimed (for a poller to enqueue)."""
        ...

    def list(self, *, failed: bool = False, limit: int = 100) -> list[Delivery]:
        """The newest rows first; only ``failed`` ones when asked."""
        ...

    def counts(self) -> dict[str, int]:
        """How many rows are in each status."""
        ...


def delivery_id_of(event_id: str, webhook_id: str) -> str:
    return "dlv_" + uuid.uuid5(_DELIVERY_NAMESPACE, f"{event_id}\n{webhook_id}").hex


def notice_body(notice: Notice) -> str:
    """The JSON body every subscribed webhook receives for ``notice``."""
    created = notice.occurred_at.isoformat().replace("+00:00", "Z")
    document = {"id": notice.event_id, "type": notice.type, "created_at": created, "data": notice.data}
    return json.dumps(document, separators=(",", ":"), sort_keys=True)


def outcome_of(delivery: Delivery, result: SendResult, *, now: float, policy: RetryPolicy) -> Outcome:
    """The row after one attempt answered ``result``: delivered, retried later, or failed."""
    attempts = delivery.attempts + 1
    if result.delivered:
        return Outcome(DELIVERED, attempts, now, None, result.status, None)
    error = (result.error or f"HTTP {result.status}")[:ERROR_TEXT_LIMIT]
    if attempts >= policy.max_attempts:
        return Outcome(FAILED, attempts, now, None, result.status, error)
    return Outcome(PENDING, attempts, now, now + policy.delay_after(attempts), result.status, error)


def abandoned(delivery: Delivery, reason: str, *, now: float) -> Outcome:
    """The row when it can no longer be sent (its webhook was removed or unsubscribed)."""
    return Outcome(FAILED, delivery.attempts, now, None, None, reason[:ERROR_TEXT_LIMIT])


class NoSubscribers:
    """Until webhook subscriptions are wired in: nobody is subscribed to anything."""

    def subscribed_to(self, notice_type: str) -> list[Subscription]:
        return []


class DeliveryOutbox:
    """The ``NoticeOutbox``: one durable delivery row per (notice, subscribed webhook).

    ``queued`` is told the ids of the rows this call added (server mode enqueues a wake-up
    for each; a lost wake-up only delays the delivery until the next poll)."""

    def __init__(
        self,
        rows: DeliveryRows,
        subscribers: Subscribers,
        now: Callable[[], float],
        queued: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.rows = rows
        self.subscribers = subscribers
        self.now = now
        self.queued = queued

    def publish(self, notices: Sequence[Notice]) -> None:
        now = self.now()
        deliveries = [
            Delivery(
                delivery_id=delivery_id_of(notice.event_id, subscription.webhook_id),
                event_id=notice.event_id,
                webhook_id=subscription.webhook_id,
                notice_type=notice.type,
                url=subscription.url,
                body=notice_body(notice),
                status=PENDING,
                attempts=0,
                created_at=now,
                next_attempt_at=now,
            )
            for notice in notices
            for subscription in self.subscribers.subscribed_to(notice.type)
        ]
        if deliveries and self.rows.add(deliveries) and self.queued is not None:
            self.queued([delivery.delivery_id for delivery in deliveries])

    def list(self, *, failed: bool = False, limit: int = 100) -> list[Delivery]:
        return self.rows.list(failed=failed, limit=limit)
