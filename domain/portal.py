"""The customer portal's sign-in links and the revocation of an account's portal access.

Invariants:
- a sign-in link is redeemed at most once: its ``PortalLink`` aggregate (id derived from
  the digest of its token, never the token itself) records ``Redeemed`` as its second
  event, so two redemptions, in any processes, both write version 2 and the event store
  refuses the second;
- a link is redeemable only before ``expires_at`` and only while its account's portal
  ``generation`` is the one it was issued in;
- ``PortalAccess.generation`` only grows: ``tallyhub portal revoke ACCOUNT`` records
  ``SessionsRevoked``, which ends every session and unused link issued in an earlier
  generation (sessions carry the generation they were opened in). An account that was
  never revoked has no ``PortalAccess`` and is in generation 0.
"""

from datetime import datetime
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import AuthenticationFailed
from domain.ids import NAMESPACE


def portal_link_id(token_digest: str) -> UUID:
    return uuid5(NAMESPACE, f"portal-link:{token_digest}")


def portal_access_id(account_id: UUID) -> UUID:
    return uuid5(NAMESPACE, f"portal-access:{account_id.hex}")


class LinkRefused(AuthenticationFailed):
    """A sign-in link that is unknown, expired, already used or revoked (never says which
    to the browser; the message is the same for all)."""

    code = "portal_link_refused"


class PortalLink(Aggregate):
    class Issued(Aggregate.Created):
        digest: str
        account_id: UUID
        expires_at: datetime
        generation: int

    class Redeemed(Aggregate.Event):
        at: datetime

    @staticmethod
    def create_id(digest: str) -> UUID:
        return portal_link_id(digest)

    @event(Issued)
    def __init__(self, digest: str, account_id: UUID, expires_at: datetime, generation: int) -> None:
        self.digest = digest
        self.account_id = account_id
        self.expires_at = expires_at
        self.generation = generation
        self.redeemed_at: datetime | None = None

    def redeem(self, now: datetime, generation: int) -> None:
        """Use the link; LinkRefused when it was used, expired or revoked."""
        if self.redeemed_at is not None or now >= self.expires_at or generation != self.generation:
            raise LinkRefused("this sign-in link is invalid, expired or already used")
        self._redeemed(at=now)

    @event(Redeemed)
    def _redeemed(self, at: datetime) -> None:
        self.redeemed_at = at


class PortalAccess(Aggregate):
    class Created(Aggregate.Created):
        account_id: UUID

    class SessionsRevoked(Aggregate.Event):
        generation: int  # the generation from now on

    @staticmethod
    def create_id(account_id: UUID) -> UUID:
        return portal_access_id(account_id)

    @event(Created)
    def __init__(self, account_id: UUID) -> None:
        self.account_id = account_id
        self.generation = 0

    def revoke_sessions(self) -> None:
        self._sessions_revoked(generation=self.generation + 1)

    @event(SessionsRevoked)
    def _sessions_revoked(self, generation: int) -> None:
        self.generation = generation
