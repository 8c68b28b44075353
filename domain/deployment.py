"""The deployment singleton, created once by ``tallyhub init``: its existence marks
the store as initialised, and it names the API-key pepper's row in the secret store
(``pepper_ref``). The pepper itself never changes (every key digest depends on it); its
envelope is re-encrypted in the secret store when the master key rotates.

Stores made before the secret store recorded the pepper's envelope in ``Initialised``
and ``PepperRewrapped``: those events still load (``legacy_sealed_pepper``) until
``PepperMoved`` records that the pepper lives in the store. History cannot be edited:
``sealed_in_history`` counts the envelopes its events still hold, per master key id."""

from typing import Any

from eventsourcing.domain import Aggregate, event

from domain import ids


class Deployment(Aggregate):
    class Initialised(Aggregate.Created):
        sealed_pepper: dict[str, str] | None
        admin_key_digest: str
        pepper_ref: str | None = None

    class PepperRewrapped(Aggregate.Event):
        sealed_pepper: dict[str, str]

    class PepperMoved(Aggregate.Event):
        pepper_ref: str

    @staticmethod
    def create_id() -> Any:
        return ids.DEPLOYMENT_ID

    @event(Initialised)
    def __init__(
        self, sealed_pepper: dict[str, str] | None, admin_key_digest: str, pepper_ref: str | None = None
    ) -> None:
        """New stores give ``pepper_ref`` and no envelope; old events carry ``sealed_pepper``."""
        self.legacy_sealed_pepper = sealed_pepper or None
        self.admin_key_digest = admin_key_digest
        self.pepper_ref = pepper_ref
        self.sealed_in_history: dict[str, int] = {}
        if sealed_pepper:
            self._count_sealed(sealed_pepper)

    @event(PepperRewrapped)
    def _pepper_rewrapped(self, sealed_pepper: dict[str, str]) -> None:
        """Before the secret store (only old events call this)."""
        if self.pepper_ref is None:
            self.legacy_sealed_pepper = sealed_pepper
        self._count_sealed(sealed_pepper)

    def move_pepper(self, pepper_ref: str) -> None:
        if self.pepper_ref is None:
            self._pepper_moved(pepper_ref=pepper_ref)

    @event(PepperMoved)
    def _pepper_moved(self, pepper_ref: str) -> None:
        self.pepper_ref = pepper_ref
        self.legacy_sealed_pepper = None

    def _count_sealed(self, sealed: dict[str, str]) -> None:
        kid = sealed.get("kid") if isinstance(sealed, dict) else None
        kid = kid if isinstance(kid, str) and kid else "(none)"
        self.sealed_in_history[kid] = self.sealed_in_history.get(kid, 0) + 1
