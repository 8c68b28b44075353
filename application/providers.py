"""Providers and their credentials: registering a provider, adding, rotating, deleting,
disabling and enabling credentials, changing their weights, disabling and enabling
providers (the Provider and Catalog aggregates), over the Ledger's unit of work. The
secret store's master keys are application/key_management.py.

Invariants kept here:
- a credential's secret is sealed into the secret store before the event that refers to
  it is saved: a crash leaves an unused row, never an event naming a missing secret; no
  secret appears in an event, only its row's reference and a hint of its last 4
  characters (domain/provider.py);
- a rotated credential is replaced in one event-pair on its provider; the old one stays
  usable until its grace period ends (routing then leaves it out), and its secret is
  deleted at once without a grace period, else by ``retire_due_credentials`` once the
  period has ended; a deleted credential's secret is deleted after its event.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

from eventsourcing.domain import Aggregate

from application.api_keys import check_grace
from application.ledger import Ledger, clean_name, credential_ref
from domain.catalog import Catalog
from domain.errors import AlreadyExists, InvalidRequest
from domain.provider import KINDS_WITHOUT_SECRET, Credential, Provider, UpstreamPolicy


@dataclass(frozen=True)
class CredentialRotation:
    provider: Provider
    old_credential_id: str
    new_credential_id: str
    retires_at: datetime | None  # None: the old credential was disabled at once


class ProviderRegistry:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def register_provider(
        self,
        name: str,
        kind: str,
        *,
        base_url: str | None,
        region: str | None,
        secret: str | None,
        weight: int = 1,
        policy: UpstreamPolicy | None = None,
    ) -> Provider:
        """``policy``: its timeouts and retries when not the defaults (recorded after ``Registered``)."""
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
            if policy is not None:
                provider.set_policy(policy)
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

    def set_policy(self, name: str, **changes: Any) -> Provider:
        """Change some of a provider's timeouts and retries (``UpstreamPolicy``'s fields); the
        others keep their values. Nothing is saved when nothing changes."""
        unknown = sorted(set(changes) - set(UpstreamPolicy.__dataclass_fields__))
        if unknown:
            raise InvalidRequest(f"unknown provider settings: {', '.join(unknown)}", param=unknown[0])

        def change(provider: Provider) -> list[Aggregate] | None:
            policy = UpstreamPolicy(**{**provider.policy.to_dict(), **changes})
            return _none_if_unchanged(provider, lambda: provider.set_policy(policy))

        return self._change_provider(name, change)

    def disable_credential(self, name: str, credential_id: str, reason: str, *, automatic: bool = False) -> Provider:
        return self._change_provider(
            name,
            lambda p: _none_if_unchanged(p, lambda: p.disable_credential(credential_id, reason, automatic=automatic)),
        )

    def enable_credential(self, name: str, credential_id: str) -> Provider:
        return self._change_provider(name, lambda p: _none_if_unchanged(p, lambda: p.enable_credential(credential_id)))

    def set_credential_weight(self, name: str, credential_id: str, weight: int) -> Provider:
        """Give a credential another share of traffic; nothing is saved when it already has it.
        Routing in this process uses it at once, in others within their read cache's age."""
        return self._change_provider(
            name, lambda p: _none_if_unchanged(p, lambda: p.set_credential_weight(credential_id, weight))
        )

    def disable_provider(self, name: str) -> Provider:
        return self._change_provider(name, lambda p: _none_if_unchanged(p, p.disable))

    def enable_provider(self, name: str) -> Provider:
        return self._change_provider(name, lambda p: _none_if_unchanged(p, p.enable))

    def rotate_credential(
        self,
        name: str,
        secret: str,
        *,
        credential_id: str | None = None,
        grace: timedelta = timedelta(0),
        weight: int | None = None,
    ) -> CredentialRotation:
        """Add ``secret`` as a new credential replacing ``credential_id`` (or the provider's only
        current one). With a grace period both are used until it ends; without, the old is disabled now."""
        if not secret:
            raise InvalidRequest("a credential needs a secret (--api-key-stdin)", param="api_key")
        grace = check_grace(grace)
        self.retire_due_credentials(name)
        outcome: dict[str, Any] = {}

        def rotate(provider: Provider) -> list[Aggregate]:
            now = self.ledger.clock.now()
            old = provider.credential(credential_id) if credential_id else _only_current(provider, now)
            new_id = self.seal_into(provider, secret, weight or old.weight)
            provider.rotate_credential(old.credential_id, new_id, retires_at=now + grace)
            if not grace:
                provider.disable_credential(old.credential_id, f"rotated: replaced by {new_id}", automatic=False)
            outcome.update(
                old=old.credential_id,
                new=new_id,
                retires_at=now + grace if grace else None,
                old_ref=old.secret_ref,
            )
            return []

        self.ledger.change(lambda: self.ledger.get_provider(name), rotate)
        if not grace:
            self.ledger.delete_secrets([outcome["old_ref"]])  # superseded now: its secret goes
        return CredentialRotation(self.ledger.get_provider(name), outcome["old"], outcome["new"], outcome["retires_at"])

    def delete_credential(self, name: str, credential_id: str) -> Provider:
        """Delete a credential and then its secret (the event first: a crash between leaves an
        unreferenced row, which ``rotate_master`` deletes)."""
        refs: list[str | None] = []

        def delete(provider: Provider) -> list[Aggregate]:
            refs[:] = [provider.credential(credential_id).secret_ref]
            provider.delete_credential(credential_id)
            return []

        self.ledger.change(lambda: self.ledger.get_provider(name), delete)
        self.ledger.delete_secrets(refs)
        return self.ledger.get_provider(name)

    def retire_due_credentials(self, name: str | None = None) -> list[tuple[str, str]]:
        """Record ``CredentialDisabled`` for rotated credentials whose grace period has ended
        (routing already leaves them out) and delete their secrets; returns (provider,
        credential id) pairs."""
        names = [name] if name else [p.name for p in self.ledger.list_providers()]
        return [
            (provider_name, credential_id) for provider_name in names for credential_id in self._retire(provider_name)
        ]

    def _retire(self, name: str) -> list[str]:
        """``retire_due_credentials`` for one provider; returns the credential ids."""
        due: list[str] = []
        refs: list[str | None] = []

        def retire(provider: Provider) -> list[Aggregate] | None:
            due.clear()
            refs.clear()
            for credential in provider.retired_credentials(self.ledger.clock.now()):
                provider.disable_credential(
                    credential.credential_id, f"rotated: replaced by {credential.replaced_by}", automatic=False
                )
                due.append(credential.credential_id)
                refs.append(credential.secret_ref)
            return [] if due else None

        if not self.ledger.change(lambda: self.ledger.get_provider(name), retire):
            return []
        self.ledger.delete_secrets(refs)
        return due

    def _change_provider(self, name: str, change: Callable[[Provider], Sequence[Aggregate] | None]) -> Provider:
        self.ledger.change(lambda: self.ledger.get_provider(name), change)
        return self.ledger.get_provider(name)


def _only_current(provider: Provider, now: datetime) -> Credential:
    current = [c for c in provider.usable_credentials(now) if not c.replaced_by]
    if len(current) != 1:
        ids_ = ", ".join(c.credential_id for c in current) or "none"
        raise InvalidRequest(
            f"{provider.name!r} has {len(current)} current credentials ({ids_}): say which to rotate with --credential",
            param="credential",
        )
    return current[0]


def mask(secret: str) -> str:
    return "…" + secret[-4:] if len(secret) >= 12 else "…"


def _none_if_unchanged(aggregate: Aggregate, change: Callable[[], None]) -> list[Aggregate] | None:
    """Run ``change``; nothing to save when it triggered no event (already in that state)."""
    before = len(aggregate.pending_events)
    change()
    return [] if len(aggregate.pending_events) > before else None
