"""Prices and aliases: the commands that publish price-book versions and name model
aliases (the PriceBook and Catalog aggregates), over the Ledger's unit of work.

A price-book version, once published, is never edited: a new price is a new version
(domain/price_book.py). Every priced model is ``PROVIDER/MODEL``; a price file may only
name models of registered providers. The hot path reads prices and aliases through the
Ledger's read cache (``recent_price_book``, ``recent_aliases``), not through this service.
"""

from datetime import datetime

from eventsourcing.domain import Aggregate

from application.ledger import Ledger, validate_model_id
from domain.catalog import Catalog
from domain.price_book import PriceBook
from domain.pricing import ModelPrice


class Prices:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def set_price(self, model: str, price: ModelPrice) -> int:
        """Publish a new price-book version with ``model`` at ``price``; returns the version."""
        validate_model_id(model)
        published: list[int] = []

        def set_(book: PriceBook) -> list[Aggregate]:
            published.append(book.set_price(model, price, now=self.ledger.clock.now()))
            return []

        self.ledger.change(self.ledger.price_book, set_)
        return published[-1]

    def publish_prices(self, prices: dict[str, ModelPrice], effective_at: datetime | None = None) -> int:
        """Publish a complete price-book version (a price file); returns its number.

        Every model must belong to a registered provider."""
        self.ledger.check_models_known(prices)
        published: list[int] = []
        now = self.ledger.clock.now()

        def publish(book: PriceBook) -> list[Aggregate]:
            published.append(book.publish_version(prices, effective_at or now, now=now))
            return []

        self.ledger.change(self.ledger.price_book, publish)
        return published[-1]

    def set_alias(self, name: str, models: list[str]) -> list[str]:
        def set_(catalog: Catalog) -> list[Aggregate]:
            catalog.set_alias(name, models)
            return []

        self.ledger.change(self.ledger.catalog, set_)
        return models

    def remove_alias(self, name: str) -> None:
        def remove(catalog: Catalog) -> list[Aggregate]:
            catalog.remove_alias(name)
            return []

        self.ledger.change(self.ledger.catalog, remove)

    def aliases(self) -> dict[str, list[str]]:
        return dict(self.ledger.catalog().aliases)
