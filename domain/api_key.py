"""A caller's API key. Only a keyed digest of the key is ever stored; the aggregate id
is derived from that digest, so authenticating is one lookup by identity."""

from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain import ids


class ApiKey(Aggregate):
    @staticmethod
    def create_id(digest: str) -> UUID:
        return ids.api_key_id(digest)

    @event("Issued")
    def __init__(self, digest: str, account_id: UUID, name: str, prefix: str, expires_at: datetime | None) -> None:
        self.digest = digest
        self.account_id = account_id
        self.name = name
        self.prefix = prefix
        self.expires_at = expires_at
        self.revoked = False

    def revoke(self, reason: str = "") -> None:
        if not self.revoked:
            self._revoked(reason=reason)

    @event("Revoked")
    def _revoked(self, reason: str) -> None:
        self.revoked = True

    def is_usable(self, now: datetime) -> bool:
        return not self.revoked and (self.expires_at is None or now < self.expires_at)
