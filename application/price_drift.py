"""Price drift (``tallyhub prices drift``): how far the provider costs the current
price-book version records are from a catalog's, and which models callers asked for that
have no price.

Invariants kept here:
- nothing is written: a report reads the price book, the catalog and request-log rows;
- a rate drifts when ``|recorded - catalog| / catalog`` is strictly above the threshold
  (a catalog rate of 0 drifts from any recorded rate that is not 0); the catalog's rate
  is converted as an import would convert it (application/price_import.py: dollars ×
  credits per dollar, rounded once, half up), so a version just imported has no drift;
- the rates compared are the base ones a request without tiers pays: input, cached input,
  5-minute and 1-hour cache writes, output, reasoning (each as the price charges it, its
  defaults applied), and the per-request and per-web-search fees;
- a model is missing a price when a request-log row names it and the current version does
  not price it; it is counted once per row.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from application.price_import import PriceCatalog, catalog_model_price
from domain.errors import InvalidRequest
from domain.pricing import ModelPrice, QuarterRates, rates_for
from domain.provider import Provider

COMPARED = ("input", "cached_input", "cache_write_5m", "cache_write_1h", "output", "reasoning")
FEES = ("per_request", "per_web_search")
MAX_THRESHOLD = Decimal(10_000)


class LoggedRequest(Protocol):
    """What the drift report reads of a request-log row (projections/request_log.py ``RequestRow``)."""

    @property
    def model(self) -> str: ...
    @property
    def at(self) -> datetime: ...
    @property
    def outcome(self) -> str: ...


@dataclass(frozen=True)
class RateDrift:
    rate: str
    recorded: Decimal  # nanocredits per 1M tokens (per call for a fee), as charged (exact)
    catalog: Decimal
    change_percent: Decimal | None  # None: the catalog's rate is 0


@dataclass(frozen=True)
class ModelDrift:
    model: str
    source: str  # the catalog's provider/model
    rates: list[RateDrift]


@dataclass(frozen=True)
class MissingPrice:
    model: str
    requests: int
    failed: int
    last_seen: datetime


@dataclass
class DriftReport:
    catalog: str
    catalog_version: str
    version: int
    threshold_percent: Decimal
    drifted: list[ModelDrift] = field(default_factory=list)
    within: list[str] = field(default_factory=list)
    no_provider_cost: list[str] = field(default_factory=list)
    not_in_catalog: list[str] = field(default_factory=list)
    missing_prices: list[MissingPrice] = field(default_factory=list)


def _charged(rates: QuarterRates, name: str) -> Decimal:
    """A rate as the price charges it, in nanocredits per 1M tokens (defaults applied: exact)."""
    return Decimal(getattr(rates, name)) / 4


def _drift(name: str, recorded: Decimal, catalog: Decimal, threshold: Decimal) -> RateDrift | None:
    if catalog == 0:
        return None if recorded == 0 else RateDrift(name, recorded, catalog, None)
    change = (recorded - catalog) / catalog * 100
    if abs(change) <= threshold:
        return None
    return RateDrift(name, recorded, catalog, change.quantize(Decimal("0.01")))


def compare(recorded: ModelPrice, catalog: ModelPrice, threshold: Decimal) -> list[RateDrift]:
    """The rates of ``recorded`` more than ``threshold`` percent from ``catalog``'s."""
    mine, theirs = rates_for(recorded, None, 0), rates_for(catalog, None, 0)
    drifts = [_drift(name, _charged(mine, name), _charged(theirs, name), threshold) for name in COMPARED]
    drifts += [
        _drift(name, Decimal(getattr(recorded, name)), Decimal(getattr(catalog, name)), threshold) for name in FEES
    ]
    return [found for found in drifts if found is not None]


def missing_prices(rows: Iterable[LoggedRequest], priced: Callable[[str], bool]) -> list[MissingPrice]:
    """Models the rows name that are not priced, most asked for first."""
    counts: dict[str, tuple[int, int, datetime]] = {}
    for row in rows:
        if priced(row.model):
            continue
        requests, failed, last = counts.get(row.model, (0, 0, row.at))
        counts[row.model] = (requests + 1, failed + (row.outcome != "completed"), max(last, row.at))
    found = [MissingPrice(model, *counted) for model, counted in counts.items()]
    return sorted(found, key=lambda missing: (-missing.requests, missing.model))


class PriceDrift:
    def __init__(
        self,
        providers: Callable[[], list[Provider]],
        current: Callable[[], tuple[int, dict[str, ModelPrice]]],
        now: Callable[[], datetime],
    ) -> None:
        self.providers, self.current, self.now = providers, current, now

    def report(
        self,
        catalog: PriceCatalog,
        rows: Iterable[LoggedRequest],
        threshold_percent: Decimal = Decimal(1),
        credits_per_usd: Decimal = Decimal(1),
    ) -> DriftReport:
        if not (threshold_percent.is_finite() and 0 <= threshold_percent <= MAX_THRESHOLD):
            raise InvalidRequest(f"the threshold must be a percentage from 0 to {MAX_THRESHOLD}", param="threshold")
        if not (credits_per_usd.is_finite() and credits_per_usd > 0):
            raise InvalidRequest("credits per US dollar must be a positive number", param="credits_per_usd")
        version, prices = self.current()
        report = DriftReport(catalog.name, catalog.version, version, threshold_percent)
        registered = {provider.name: provider for provider in self.providers()}
        now = self.now()
        for model, price in sorted(prices.items()):
            name, _, upstream = model.partition("/")
            provider = registered.get(name)
            catalog_provider = catalog.provider_for(provider) if provider is not None else None
            entry = catalog.lookup(catalog_provider, upstream, now) if catalog_provider else None
            if entry is None:
                report.not_in_catalog.append(model)
            elif price.provider_cost is None:
                report.no_provider_cost.append(model)
            else:
                expected = catalog_model_price(entry, credits_per_usd)
                drifts = compare(price.provider_cost, expected, threshold_percent)
                if drifts:
                    report.drifted.append(ModelDrift(model, f"{entry.provider}/{entry.model}", drifts))
                else:
                    report.within.append(model)
        report.missing_prices = missing_prices(rows, lambda model: model in prices)
        return report
