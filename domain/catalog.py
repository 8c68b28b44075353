"""The catalog singleton lists provider names, so they can be enumerated without
scanning the event log."""

from typing import Any

from eventsourcing.domain import Aggregate, event

from domain import ids


class Catalog(Aggregate):
    @staticmethod
    def create_id() -> Any:
        return ids.CATALOG_ID

    @event("Opened")
    def __init__(self) -> None:
        self.provider_names: list[str] = []

    def list_provider(self, name: str) -> None:
        if name not in self.provider_names:
            self._provider_listed(name=name)

    @event("ProviderListed")
    def _provider_listed(self, name: str) -> None:
        self.provider_names.append(name)
