"""The deployment singleton, created once by ``tallyhub init``: its existence marks
the store as initialised and it holds the sealed API-key pepper. The pepper itself
never changes (every key digest depends on it); only its envelope is re-wrapped when
the master key rotates."""

from typing import Any

from eventsourcing.domain import Aggregate, event

from domain import ids


class Deployment(Aggregate):
    @staticmethod
    def create_id() -> Any:
        return ids.DEPLOYMENT_ID

    @event("Initialised")
    def __init__(self, sealed_pepper: dict[str, str], admin_key_digest: str) -> None:
        self.sealed_pepper = sealed_pepper
        self.admin_key_digest = admin_key_digest

    def rewrap_pepper(self, sealed_pepper: dict[str, str]) -> None:
        self._pepper_rewrapped(sealed_pepper=sealed_pepper)

    @event("PepperRewrapped")
    def _pepper_rewrapped(self, sealed_pepper: dict[str, str]) -> None:
        self.sealed_pepper = sealed_pepper
