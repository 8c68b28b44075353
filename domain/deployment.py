"""The deployment singleton, created once by ``tallyhub init``: its existence marks
the store as initialised and it holds the sealed API-key pepper."""

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
