"""An upstream provider and its credentials. Credentials are held only as sealed
envelopes (ciphertext, wrapped data key, key id) and a masked hint."""

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

    def usable_credentials(self) -> list[dict[str, Any]]:
        return [c for c in self.credentials if c["enabled"]]
