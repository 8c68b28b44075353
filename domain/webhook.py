"""Webhook subscriptions: where the gateway sends its notices (application/notices.py).

One ``WebhookRegistry`` aggregate (a fixed id, like the catalog) holds every
subscription, so adding and removing are decided by one aggregate's version: two
operators changing it at once are serialised by the store.

Invariants:
- an event never holds a webhook's signing secret, only ``secret_ref``, its row in the
  secret store (sealed there under the master key before the event is saved, as
  provider credentials are: application/webhooks.py);
- a subscription's URL is http or https with a host and no credentials in it, and its
  events are a non-empty subset of ``NOTICE_TYPES``;
- a removed webhook is gone for good: its id is never reused (ids are random).
"""

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain import ids
from domain.errors import InvalidRequest, NotFound

# The notice types a webhook may subscribe to (application/notices.py NOTICE_TYPES is this tuple).
EVENT_TYPES = (
    "balance.low",
    "balance.exhausted",
    "spend_cap.reached",
    "credential.disabled",
    "credential.restored",
    "grant.expiring",
    "price.missing",
)
MAX_URL_CHARS = 2048
MAX_WEBHOOKS = 100
WEBHOOK_REGISTRY_ID = uuid5(ids.NAMESPACE, "webhook-registry")


@dataclass(frozen=True)
class Webhook:
    """One subscription as its events left it (never its secret)."""

    webhook_id: str
    url: str
    events: tuple[str, ...]
    secret_ref: str

    def plain(self) -> dict[str, Any]:
        """What ``webhooks list`` and ``GET /admin/v1/webhooks`` show of it."""
        return {
            "id": self.webhook_id,
            "url": self.url,
            "events": list(self.events),
        }


def check_url(url: str) -> str:
    """The URL, if a webhook may be sent to it; InvalidRequest saying why not."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS or url != url.strip():
        raise InvalidRequest(
            f"a webhook URL is an http or https URL of at most {MAX_URL_CHARS} characters", param="url"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise InvalidRequest(f"the webhook URL cannot be parsed: {exc}", param="url") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidRequest(f"a webhook URL must be http or https, not {parts.scheme or 'none'!r}", param="url")
    if not parts.hostname:
        raise InvalidRequest("a webhook URL needs a host", param="url")
    if parts.username is not None or parts.password is not None:
        raise InvalidRequest(
            "a webhook URL must not carry credentials (user:password@): receivers check the signature instead",
            param="url",
        )
    if any(ch.isspace() for ch in url):
        raise InvalidRequest("a webhook URL must not contain whitespace", param="url")
    return url


def check_events(events: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The event types, de-duplicated in the given order; InvalidRequest naming an unknown one."""
    chosen: list[str] = []
    for name in events:
        if name not in EVENT_TYPES:
            raise InvalidRequest(f"unknown event type {name!r}; known: {', '.join(EVENT_TYPES)}", param="events")
        if name not in chosen:
            chosen.append(name)
    if not chosen:
        raise InvalidRequest(f"name at least one event type: {', '.join(EVENT_TYPES)}", param="events")
    return tuple(chosen)


class WebhookRegistry(Aggregate):
    class Created(Aggregate.Created):
        pass

    class WebhookAdded(Aggregate.Event):
        webhook_id: str
        url: str
        events: list[str]
        secret_ref: str

    class WebhookRemoved(Aggregate.Event):
        webhook_id: str

    @staticmethod
    def create_id() -> UUID:
        return WEBHOOK_REGISTRY_ID

    @event(Created)
    def __init__(self) -> None:
        self.webhooks: dict[str, Webhook] = {}

    def add(self, webhook_id: str, url: str, events: list[str] | tuple[str, ...], secret_ref: str) -> None:
        """Subscribe ``url`` to ``events``; its secret is already in the store under ``secret_ref``."""
        url, chosen = check_url(url), check_events(events)
        if webhook_id in self.webhooks:
            raise InvalidRequest(f"webhook {webhook_id} already exists")
        if len(self.webhooks) >= MAX_WEBHOOKS:
            raise InvalidRequest(f"at most {MAX_WEBHOOKS} webhooks; remove one first")
        self._webhook_added(webhook_id=webhook_id, url=url, events=list(chosen), secret_ref=secret_ref)

    @event(WebhookAdded)
    def _webhook_added(self, webhook_id: str, url: str, events: list[str], secret_ref: str) -> None:
        self.webhooks[webhook_id] = Webhook(webhook_id, url, tuple(events), secret_ref)

    def remove(self, webhook_id: str) -> Webhook:
        """Unsubscribe; returns what was removed (its secret is deleted after the event)."""
        webhook = self.get(webhook_id)
        self._webhook_removed(webhook_id=webhook_id)
        return webhook

    @event(WebhookRemoved)
    def _webhook_removed(self, webhook_id: str) -> None:
        self.webhooks.pop(webhook_id, None)

    def get(self, webhook_id: str) -> Webhook:
        webhook = self.webhooks.get(webhook_id)
        if webhook is None:
            raise NotFound(f"no webhook {webhook_id!r}")
        return webhook

    def listed(self) -> list[Webhook]:
        """In the order they were added."""
        return list(self.webhooks.values())
