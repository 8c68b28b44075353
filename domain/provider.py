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
