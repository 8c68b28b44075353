"""The price book: a sequence of immutable, numbered versions, each with the time it
takes effect. Publishing never edits an earlier version; a version may take effect
now or later, never in the past, so a charge already made is never re-priced in place
(re-pricing history is a replay, recorded as adjustments). Every charge names the
version in effect when its request started. Every price a version holds is a
``ModelPrice``, so within the bounds it keeps (domain/pricing.py), and its time names
a zone."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from eventsourcing.domain import Aggregate, event

from domain import ids
from domain.errors import InvalidRequest
from domain.pricing import ModelPrice

# Clocks of several gateway processes differ a little; "now" may arrive slightly late.
CLOCK_SKEW = timedelta(seconds=5)


@dataclass(frozen=True)
class PriceBookVersion:
    number: int
    effective_at: datetime | None
    prices: dict[str, dict[str, Any]]

    def price_for(self, model: str) -> ModelPrice | None:
        data = self.prices.get(model)
        return None if data is None else ModelPrice.from_dict(data)


class PriceBook(Aggregate):
    class Opened(Aggregate.Created):
        pass

    class VersionPublished(Aggregate.Event):  # its fields are _version_published's parameters, in order
        version: int
        prices: dict[str, dict[str, Any]]  # model -> ModelPrice.to_dict()
        effective_at: datetime

    @staticmethod
    def create_id() -> Any:
        return ids.PRICE_BOOK_ID

    @event(Opened)
    def __init__(self) -> None:
        self.versions: list[dict[str, Any]] = []

    @property
    def latest(self) -> PriceBookVersion:
        """The last version published (which may not be in effect yet)."""
        if not self.versions:
            return PriceBookVersion(0, None, {})
        return _version(self.versions[-1])

    def effective(self, at: datetime) -> PriceBookVersion:
        """The version in effect at ``at``: the latest published whose time has come."""
        for data in reversed(self.versions):
            if data["effective_at"] <= at:
                return _version(data)
        return PriceBookVersion(0, None, {})

    def publish_version(self, prices: dict[str, ModelPrice], effective_at: datetime, *, now: datetime) -> int:
        """Publish a complete new version; returns its number."""
        if not isinstance(effective_at, datetime) or effective_at.utcoffset() is None:
            raise InvalidRequest("a price-book version's effective_at must be a time with a zone", param="effective_at")
        for model, price in prices.items():
            if not isinstance(price, ModelPrice):
                raise InvalidRequest(f"{model}: not a price", param="prices")
        if effective_at < now - CLOCK_SKEW:
            raise InvalidRequest("a price-book version cannot take effect in the past", param="effective_at")
        self._version_published(
            version=self.latest.number + 1,
            prices={model: price.to_dict() for model, price in sorted(prices.items())},
            effective_at=effective_at,
        )
        return self.latest.number

    def set_price(self, model: str, price: ModelPrice, *, now: datetime) -> int:
        """Publish, effective now, the latest version with ``model`` priced at ``price``."""
        prices = {name: ModelPrice.from_dict(data) for name, data in self.latest.prices.items()}
        prices[model] = price
        return self.publish_version(prices, now, now=now)

    @event(VersionPublished)
    def _version_published(self, version: int, prices: dict[str, dict[str, Any]], effective_at: datetime) -> None:
        self.versions.append({"version": version, "effective_at": effective_at, "prices": prices})


def _version(data: dict[str, Any]) -> PriceBookVersion:
    return PriceBookVersion(data["version"], data["effective_at"], data["prices"])
