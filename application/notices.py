"""Notices: what the gateway tells operators' and customers' systems (``balance.low``,
``credential.disabled``, …), and the two ports between deriving them and delivering them.

Alerts are derived from the event stream by a process with a tracked position
(application/alerts.py); each one is a ``Notice`` with an id that is a function of what
caused it, so deriving it again (a restart, a second worker) yields the same id. The
``NoticeOutbox`` takes notices and delivers each at most once per subscribed webhook
(signed, retried with backoff, logged: application/deliveries.py); ``publish`` is
idempotent by ``event_id``. Webhook subscriptions are ledger state (application/webhooks.py);
the outbox reads them through ``Subscribers``.

Invariant: a ``Notice``'s ``event_id`` names one occurrence (one downward crossing of one
threshold, one disabling of one credential…): never reused for another, never different
for the same one.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from domain.webhook import EVENT_TYPES

NOTICE_TYPES = EVENT_TYPES  # the types a webhook may subscribe to (domain/webhook.py)


@dataclass(frozen=True)
class Notice:
    """One occurrence to deliver: its JSON body is ``{"id", "type", "created_at", "data"}``."""

    event_id: str  # unique and deterministic (see the module invariant), e.g. "evt_" + a uuid5
    type: str  # one of NOTICE_TYPES
    occurred_at: datetime  # when what caused it happened (aware, UTC)
    data: dict[str, Any] = field(default_factory=dict)  # JSON-ready: ids as dashed text, amounts as decimal text


@dataclass(frozen=True)
class Subscription:
    """A webhook that wants some notice types, and the secret its deliveries are signed with."""

    webhook_id: str
    url: str
    events: tuple[str, ...]
    secret: str = field(repr=False)


class Subscribers(Protocol):
    def subscribed_to(self, notice_type: str) -> list[Subscription]:
        """The active webhooks that want ``notice_type`` (secrets opened)."""
        ...


class NoticeOutbox(Protocol):
    def publish(self, notices: Sequence[Notice]) -> None:
        """Queue each notice for every webhook subscribed to its type at publish time, durably,
        before returning; a notice whose ``event_id`` was published before is ignored."""
        ...
