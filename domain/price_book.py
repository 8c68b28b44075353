"""The price book: a sequence of immutable, numbered versions, each with the time it
takes effect. Publishing never edits an earlier version; a version may take effect
now or later, never in the past, so a charge already made is never re-priced in place
(re-pricing history is a replay, recorded as adjustments). Every charge names the
version in effect when its request started. Every price a version holds is a
``ModelPrice``, so within the bounds it keeps (domain/pricing.py), and its time names
a zone.

A loaded book holds one ``PriceBookVersion`` object per version, and each version turns
a model's stored price into its ``ModelPrice`` once, at its first lookup: a version never
changes, so neither does what it parsed, and every request priced by the same version
shares the same immutable price. A newer version is a new object with nothing parsed
yet; a book loaded afresh (the read cache's refresh) starts afresh. A model's price is
parsed only when asked for, so a stored price a version cannot parse fails the lookups
of that model only, as it did when each lookup parsed."""

from dataclasses import dataclass, field
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
    prices: dict[str, dict[str, Any]]  # the stored form: model -> ModelPrice.to_dict()
    # model -> its price, parsed at its first lookup; threads racing on a first lookup may
    # each parse it, and the last one's (equal) price is kept
    _parsed: dict[str, ModelPrice] = field(default_factory=dict, init=False, repr=False, compare=False)

    def price_for(self, model: str) -> ModelPrice | None:
        price = self._parsed.get(model)
        if price is None:
            data = self.prices.get(model)
            if data is None:
                return None
            price = self._parsed[model] = ModelPrice.from_dict(data)
        return price


_NO_VERSION = PriceBookVersion(0, None, {})  # before the first version: nothing is priced


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
        self.versions: list[dict[str, Any]] = []  # as recorded, for the audit tools
        self._held: list[PriceBookVersion] = []  # the same versions, as looked up: one object each

    @property
    def latest(self) -> PriceBookVersion:
        """The last version published (which may not be in effect yet)."""
        return self._held[-1] if self._held else _NO_VERSION

    def effective(self, at: datetime) -> PriceBookVersion:
        """The version in effect at ``at``: the latest published whose time has come."""
        for version in reversed(self._held):
            if version.effective_at is not None and version.effective_at <= at:
                return version
        return _NO_VERSION

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
        self._held.append(PriceBookVersion(version, effective_at, prices))
