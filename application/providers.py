"""Providers and their credentials: registering a provider, adding, disabling and enabling
credentials, disabling and enabling providers (the Provider and Catalog aggregates), over
the Ledger's unit of work. Rotation, deletion and master-key re-encryption are
application/key_management.py.

A credential's secret is sealed into the secret store before the event that refers to it
is saved: a crash leaves an unused row, never an event naming a missing secret. No secret
appears in an event: the events hold its row's reference and a hint of its last 4
characters (domain/provider.py).
"""

from collections.abc import Callable, Sequence
from uuid import uuid4

from eventsourcing.domain import Aggregate

from application.ledger import Ledger, clean_name, credential_ref
from domain.catalog import Catalog
from domain.errors import AlreadyExists, InvalidRequest
from domain.provider import KINDS_WITHOUT_SECRET, Provider


class ProviderRegistry:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def register_provider(
        self, name: str, kind: str, *, base_url: str | None, region: str | None, secret: str | None, weight: int = 1
    ) -> Provider:
        name = clean_name(name, "provider name")
        if "/" in name:
            raise InvalidRequest("a provider name must not contain '/'", param="name")
        if not secret and kind not in KINDS_WITHOUT_SECRET:
            raise InvalidRequest(f"a provider of kind {kind!r} needs an API key (--api-key-stdin)", param="api_key")
        registered: list[Provider] = []

        def register(catalog: Catalog) -> list[Aggregate]:
            if name in catalog.provider_names:
                raise AlreadyExists(f"provider {name!r} already exists")
            catalog.list_provider(name)
            provider = Provider(name=name, kind=kind, base_url=base_url, region=region)
            if secret:
                self.seal_into(provider, secret, weight)
            registered.append(provider)
            return [provider]

        self.ledger.change(self.ledger.catalog, register)
        return registered[-1]

    def seal_into(self, provider: Provider, secret: str, weight: int = 1) -> str:
        """Add a credential for ``secret`` to ``provider`` (unsaved); returns its id."""
        credential_id = uuid4().hex[:12]
        ref = credential_ref(provider.name, credential_id)
        self.ledger.seal_apart(ref, secret.encode())  # before the event: a crash leaves an unused row
        try:
            provider.add_credential(credential_id, ref, hint=mask(secret), weight=weight)
        except InvalidRequest:
            self.ledger.secret_store.delete([ref])
            raise
        return credential_id

    def add_credential(self, name: str, secret: str, weight: int = 1) -> Provider:
        if not secret:
            raise InvalidRequest("a credential needs a secret (--api-key-stdin)", param="api_key")

        def add(provider: Provider) -> list[Aggregate]:
            self.seal_into(provider, secret, weight)
            return []

        return self._change_provider(name, add)

    def disable_credential(self, name: str, credential_id: str, reason: str, *, automatic: bool = False) -> Provider:
        return self._change_provider(
            name,
            lambda p: _none_if_unchanged(p, lambda: p.disable_credential(credential_id, reason, automatic=automatic)),
        )

    def enable_credential(self, name: str, credential_id: str) -> Provider:
        return self._change_provider(name, lambda p: _none_if_unchanged(p, lambda: p.enable_credential(credential_id)))

    def disable_provider(self, name: str) -> Provider:
        return self._change_provider(name, lambda p: _none_if_unchanged(p, p.disable))

    def enable_provider(self, name: str) -> Provider:
        return self._change_provider(name, lambda p: _none_if_unchanged(p, p.enable))

    def _change_provider(self, name: str, change: Callable[[Provider], Sequence[Aggregate] | None]) -> Provider:
        self.ledger.change(lambda: self.ledger.get_provider(name), change)
        return self.ledger.get_provider(name)


def mask(secret: str) -> str:
    return "…" + secret[-4:] if len(secret) >= 12 else "…"


def _none_if_unchanged(aggregate: Aggregate, change: Callable[[], None]) -> list[Aggregate] | None:
    """Run ``change``; nothing to save when it triggered no event (already in that state)."""
    before = len(aggregate.pending_events)
    change()
    return [] if len(aggregate.pending_events) > before else None
