"""An upstream provider and its credentials. Credentials are held only as sealed
envelopes (ciphertext, wrapped data key, key id) and a masked hint.

A rotated credential stays usable until its ``retires_at`` (the grace period), then
routing leaves it out even before the ``CredentialDisabled`` that records it. A
provider that needs a secret never loses its last credential while it is enabled
(with none at all it would be called without one).
"""

from datetime import datetime, timezone
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain import ids
from domain.errors import InvalidRequest

PROVIDER_KINDS = ("openai", "anthropic", "gemini", "bedrock", "ollama", "openai-compatible")
KINDS_WITHOUT_SECRET = ("ollama",)


class Provider(Aggregate):
    @staticmethod
    def create_id(name: str) -> UUID:
        return ids.provider_id(name)

    @event("Registered")
    def __init__(self, name: str, kind: str, base_url: str | None, region: str | None) -> None:
        self.name = name
        self.kind = kind
        self.base_url = base_url
        self.region = region
        self.enabled = True
        self.credentials: list[dict[str, Any]] = []

    def add_credential(self, credential_id: str, sealed: dict[str, str], hint: str, weight: int = 1) -> None:
        if weight <= 0:
            raise InvalidRequest("a credential weight must be positive", param="weight")
        if any(c["credential_id"] == credential_id for c in self.credentials):
            raise InvalidRequest(f"credential {credential_id} already exists")
        self._credential_added(credential_id=credential_id, sealed=sealed, hint=hint, weight=weight)

    @event("CredentialAdded")
    def _credential_added(self, credential_id: str, sealed: dict[str, str], hint: str, weight: int) -> None:
        self.credentials.append(
            {"credential_id": credential_id, "sealed": sealed, "hint": hint, "weight": weight, "enabled": True}
        )

    def disable_credential(self, credential_id: str, reason: str, *, automatic: bool) -> None:
        """Take a credential out of rotation: by the operator, or automatically when the
        provider refused it (an automatic disable is re-probed and may be lifted)."""
        credential = self.credential(credential_id)
        if credential["enabled"]:
            self._credential_disabled(credential_id=credential_id, reason=reason, automatic=automatic)

    @event("CredentialDisabled")
    def _credential_disabled(self, credential_id: str, reason: str, automatic: bool) -> None:
        credential = self.credential(credential_id)
        credential.update(enabled=False, disabled_reason=reason, disabled_automatically=automatic)

    def enable_credential(self, credential_id: str) -> None:
        if not self.credential(credential_id)["enabled"]:
            self._credential_enabled(credential_id=credential_id)

    @event("CredentialEnabled")
    def _credential_enabled(self, credential_id: str) -> None:
        credential = self.credential(credential_id)
        credential.update(enabled=True, disabled_reason=None, disabled_automatically=False)

    def rotate_credential(self, credential_id: str, replaced_by: str, retires_at: datetime) -> None:
        """Mark a credential as replaced by another; it stays usable until ``retires_at``."""
        credential = self.credential(credential_id)
        self.credential(replaced_by)
        if replaced_by == credential_id:
            raise InvalidRequest("a credential cannot replace itself", param="credential")
        if not credential["enabled"]:
            raise InvalidRequest(f"credential {credential_id} is disabled; delete it or add a new one", param="credential")
        if credential.get("replaced_by"):
            raise InvalidRequest(f"credential {credential_id} was already rotated", param="credential")
        self._credential_rotated(credential_id=credential_id, replaced_by=replaced_by, retires_at=retires_at)

    @event("CredentialRotated")
    def _credential_rotated(self, credential_id: str, replaced_by: str, retires_at: datetime) -> None:
        self.credential(credential_id).update(replaced_by=replaced_by, retires_at=retires_at)

    def delete_credential(self, credential_id: str) -> None:
        self.credential(credential_id)
        if self.enabled and self.kind not in KINDS_WITHOUT_SECRET and len(self.credentials) == 1:
            raise InvalidRequest(f"{credential_id} is the last credential of {self.name!r}: add another one "
                                 "or disable the provider first", param="credential")
        self._credential_deleted(credential_id=credential_id)

    @event("CredentialDeleted")
    def _credential_deleted(self, credential_id: str) -> None:
        self.credentials = [c for c in self.credentials if c["credential_id"] != credential_id]

    def rewrap_credential(self, credential_id: str, sealed: dict[str, str]) -> None:
        """Replace a credential's envelope by the same secret re-wrapped under another master key."""
        self.credential(credential_id)
        self._credential_rewrapped(credential_id=credential_id, sealed=sealed)

    @event("CredentialRewrapped")
    def _credential_rewrapped(self, credential_id: str, sealed: dict[str, str]) -> None:
        self.credential(credential_id)["sealed"] = sealed

    def credential(self, credential_id: str) -> dict[str, Any]:
        for credential in self.credentials:
            if credential["credential_id"] == credential_id:
                return credential
        raise InvalidRequest(f"provider {self.name!r} has no credential {credential_id!r}", param="credential")

    def disable(self) -> None:
        if self.enabled:
            self._disabled()

    @event("Disabled")
    def _disabled(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        if not self.enabled:
            self._enabled()

    @event("Enabled")
    def _enabled(self) -> None:
        self.enabled = True

    def usable_credentials(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """Enabled credentials whose grace period (if rotated) has not ended at ``now``."""
        now = now or datetime.now(timezone.utc)
        return [c for c in self.credentials if c["enabled"] and not _retired(c, now)]

    def retired_credentials(self, now: datetime) -> list[dict[str, Any]]:
        """Rotated credentials past their grace period that are still recorded as enabled."""
        return [c for c in self.credentials if c["enabled"] and _retired(c, now)]


def _retired(credential: dict[str, Any], now: datetime) -> bool:
    retires_at = credential.get("retires_at")
    return retires_at is not None and now >= retires_at
