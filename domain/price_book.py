"""The price book: a sequence of immutable, numbered versions. Publishing a version
never edits an earlier one; every charge names the version it was priced under."""

from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate, event

from domain import ids
from domain.pricing import ModelPrice


class PriceBook(Aggregate):
    @staticmethod
    def create_id() -> Any:
        return ids.PRICE_BOOK_ID

    @event("Opened")
    def __init__(self) -> None:
        self.current_version = 0
        self.prices: dict[str, dict[str, Any]] = {}

    def publish_version(self, prices: dict[str, ModelPrice], effective_at: datetime) -> int:
        """Publish a complete new version; returns its number."""
        self._version_published(
            version=self.current_version + 1,
            prices={model: price.to_dict() for model, price in sorted(prices.items())},
            effective_at=effective_at,
        )
        return self.current_version

    def set_price(self, model: str, price: ModelPrice, effective_at: datetime) -> int:
        """Publish a version equal to the current one with ``model`` priced at ``price``."""
        prices = {name: ModelPrice.from_dict(data) for name, data in self.prices.items()}
        prices[model] = price
        return self.publish_version(prices, effective_at)

    @event("VersionPublished")
    def _version_published(self, version: int, prices: dict[str, dict[str, Any]], effective_at: datetime) -> None:
        self.current_version = version
        self.prices = prices

    def price_for(self, model: str) -> ModelPrice | None:
        data = self.prices.get(model)
        return None if data is None else ModelPrice.from_dict(data)
