"""The catalog singleton lists provider names, so they can be enumerated without
scanning the event log, and holds the operator's model aliases: an alias names a
primary model and the fallback models tried, in order, when it fails."""

from typing import Any

from eventsourcing.domain import Aggregate, event

from domain import ids
from domain.errors import InvalidRequest, NotFound

MAX_FALLBACKS = 8


class Catalog(Aggregate):
    class Opened(Aggregate.Created):
        pass

    class ProviderListed(Aggregate.Event):
        name: str

    class AliasSet(Aggregate.Event):
        name: str
        models: list[str]

    class AliasRemoved(Aggregate.Event):
        name: str

    @staticmethod
    def create_id() -> Any:
        return ids.CATALOG_ID

    @event(Opened)
    def __init__(self) -> None:
        self.provider_names: list[str] = []
        self.aliases: dict[str, list[str]] = {}

    def list_provider(self, name: str) -> None:
        if name not in self.provider_names:
            self._provider_listed(name=name)

    @event(ProviderListed)
    def _provider_listed(self, name: str) -> None:
        self.provider_names.append(name)

    def set_alias(self, name: str, models: list[str]) -> None:
        """``models[0]`` serves the alias; the rest are fallbacks, in order."""
        if not name or "/" in name or any(ch.isspace() for ch in name):
            raise InvalidRequest("an alias is a name without '/' or spaces", param="name")
        if not models or len(models) > MAX_FALLBACKS + 1:
            raise InvalidRequest(f"an alias needs a target and at most {MAX_FALLBACKS} fallbacks", param="models")
        for model in models:
            provider, _, upstream = model.partition("/")
            if not provider or not upstream:
                raise InvalidRequest(f"alias targets are PROVIDER/MODEL, got {model!r}", param="models")
        if len(set(models)) != len(models):
            raise InvalidRequest("an alias lists each model once", param="models")
        self._alias_set(name=name, models=list(models))

    @event(AliasSet)
    def _alias_set(self, name: str, models: list[str]) -> None:
        self.aliases[name] = models

    def remove_alias(self, name: str) -> None:
        if name not in self.aliases:
            raise NotFound(f"no alias {name!r}")
        self._alias_removed(name=name)

    @event(AliasRemoved)
    def _alias_removed(self, name: str) -> None:
        del self.aliases[name]
