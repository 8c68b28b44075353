"""Webhook subscriptions (``tallyhub webhooks add | list | remove``, ``/admin/v1/webhooks``)
over the ``WebhookRegistry`` aggregate, and ``LedgerSubscribers``, the outbox's view of them
(application/notices.py ``Subscribers``).

Invariants kept here:
- a webhook's signing secret is sealed into the secret store (under the master key, bound
  to its row: ``secret_context``) before the event that names it is saved, exactly as a
  provider credential's is: a crash leaves an unused row, never an event naming a missing
  secret; no event and no listing holds the secret; it is shown once, by ``add``;
- a removed webhook's secret is deleted after its ``WebhookRemoved`` is saved;
- master-key rotation re-encrypts webhook secrets with every other row, and never deletes
  a current one as unreferenced (``webhook_secret_refs``, application/key_management.py).
"""

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import uuid4

from eventsourcing.domain import Aggregate

from application.ledger import Ledger
from application.notices import Subscription
from domain.errors import InvalidRequest, SecretError
from domain.webhook import WEBHOOK_REGISTRY_ID, Webhook, WebhookRegistry, check_events, check_url

log = logging.getLogger("tallyhub.webhooks")
SECRET_PREFIX = "whsec_"
MIN_SECRET_CHARS = 16
MAX_SECRET_CHARS = 256


@dataclass(frozen=True)
class AddedWebhook:
    webhook: Webhook
    secret: str  # shown once


def webhook_secret_ref(webhook_id: str) -> str:
    """A webhook's row in the secret store."""
    return f"webhook:{webhook_id}"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def check_secret(secret: str) -> str:
    secret = secret.strip()
    if not MIN_SECRET_CHARS <= len(secret) <= MAX_SECRET_CHARS or any(ch.isspace() for ch in secret):
        raise InvalidRequest(
            f"a webhook secret is {MIN_SECRET_CHARS} to {MAX_SECRET_CHARS} characters without spaces", param="secret"
        )
    return secret


class Webhooks:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def add_webhook(self, url: str, events: Sequence[str], secret: str | None = None) -> AddedWebhook:
        """Subscribe ``url`` to ``events``, signed with ``secret`` (a new one when None)."""
        check_url(url)
        check_events(tuple(events))
        secret = check_secret(secret) if secret is not None else new_secret()
        webhook_id = "wh_" + uuid4().hex[:16]
        ref = webhook_secret_ref(webhook_id)
        self.ledger.seal_apart(ref, secret.encode())  # before the event: a crash leaves an unused row

        def add(registry: WebhookRegistry) -> list[Aggregate]:
            registry.add(webhook_id, url, list(events), ref)
            return []

        try:
            self.ledger.change(self._registry, add)
        except Exception:
            self.ledger.secret_store.delete([ref])
            raise
        return AddedWebhook(self.registry().get(webhook_id), secret)

    def list_webhooks(self) -> list[Webhook]:
        return self.registry().listed()

    def remove_webhook(self, webhook_id: str) -> Webhook:
        """Unsubscribe, then delete the secret (NotFound for an unknown id)."""
        removed: list[Webhook] = []

        def remove(registry: WebhookRegistry) -> list[Aggregate]:
            removed[:] = [registry.remove(webhook_id)]
            return []

        self.ledger.change(self._registry, remove)
        self.ledger.delete_secrets([removed[0].secret_ref])
        return removed[0]

    def registry(self) -> WebhookRegistry:
        """The registry as saved (an empty one, unsaved, before the first webhook)."""
        found = self.ledger.find(WEBHOOK_REGISTRY_ID)
        return found if isinstance(found, WebhookRegistry) else WebhookRegistry()

    def _registry(self) -> WebhookRegistry:
        # a fresh one for each attempt: two first adds race on creating it, and the loser retries
        return self.registry()


def webhook_secret_refs(ledger: Ledger) -> set[str]:
    """The secret-store rows current webhooks refer to."""
    found = ledger.find(WEBHOOK_REGISTRY_ID)
    return {w.secret_ref for w in found.webhooks.values()} if isinstance(found, WebhookRegistry) else set()


class LedgerSubscribers:
    """``Subscribers`` over the ledger: the current webhooks, their secrets opened. A webhook
    whose secret cannot be opened (its row is missing or no configured master key opens it)
    is left out and logged: nothing could be signed for it, and it must not stop the alerts
    of every other webhook (``secrets status`` and the start-up key check name the cause)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def subscribed_to(self, notice_type: str) -> list[Subscription]:
        found = self.ledger.find(WEBHOOK_REGISTRY_ID)
        if not isinstance(found, WebhookRegistry):
            return []
        subscriptions = []
        for webhook in found.listed():
            if notice_type not in webhook.events:
                continue
            try:
                secret = self._secret(webhook)
            except SecretError:
                log.error("webhook %s is left out: its signing secret cannot be opened", webhook.webhook_id)
                continue
            subscriptions.append(Subscription(webhook.webhook_id, webhook.url, webhook.events, secret))
        return subscriptions

    def _secret(self, webhook: Webhook) -> str:
        return self.ledger.open_apart(webhook.secret_ref, f"the secret of webhook {webhook.webhook_id}").decode()
