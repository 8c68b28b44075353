"""``prices drift``: recorded provider costs against the catalog (a rate drifts when it is
strictly more than the threshold away), and the models callers asked for that have no
price, with how often."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from adapters.catalogs.genai_prices import GenaiPricesCatalog
from application.ledger import Ledger
from application.price_drift import PriceDrift, compare, missing_prices
from application.price_import import Markup, PriceImport
from application.prices import Prices
from application.providers import ProviderRegistry
from domain.errors import InvalidRequest
from domain.pricing import ModelPrice

CATALOG = GenaiPricesCatalog()
T0 = datetime(2026, 11, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Row:
    model: str
    at: datetime
    outcome: str = "completed"


def current_of(ledger: Ledger) -> tuple[int, dict[str, ModelPrice]]:
    version = ledger.price_book().effective(ledger.clock.now())
    return version.number, {model: ModelPrice.from_dict(data) for model, data in version.prices.items()}


@pytest.fixture
def drift(ledger: Ledger) -> PriceDrift:
    registry = ProviderRegistry(ledger)
    registry.register_provider("openai", "openai", base_url=None, region=None, secret="sk-test")
    registry.register_provider("claude", "anthropic", base_url=None, region=None, secret="sk-ant")
    importer = PriceImport(
        ledger.list_providers, lambda: current_of(ledger), Prices(ledger).publish_prices, ledger.clock.now
    )
    importer.apply(importer.plan(CATALOG, Markup(Decimal(20)), models=["openai/gpt-4o", "claude/claude-sonnet-4-5"]))
    return PriceDrift(ledger.list_providers, lambda: current_of(ledger), ledger.clock.now)


def test_a_version_just_imported_has_no_drift(drift: PriceDrift) -> None:
    report = drift.report(CATALOG, [], Decimal(0))
    assert report.drifted == [] and report.within == ["claude/claude-sonnet-4-5", "openai/gpt-4o"]


def test_a_provider_cost_over_the_threshold_drifts(ledger: Ledger, drift: PriceDrift) -> None:
    latest = ledger.price_book().latest.price_for("openai/gpt-4o")
    assert latest is not None and latest.provider_cost is not None
    stale = ModelPrice(input=2_600_000_000, output=10_050_000_000, cached_input=1_250_000_000)  # +4 %, +0.5 %
    Prices(ledger).set_price("openai/gpt-4o", ModelPrice(input=9, output=9, provider_cost=stale))
    Prices(ledger).set_price("openai/my-own", ModelPrice(input=1, output=1))
    Prices(ledger).set_price("claude/claude-3-haiku", ModelPrice(input=1, output=1))
    report = drift.report(CATALOG, [], Decimal(1))
    assert [d.model for d in report.drifted] == ["openai/gpt-4o"]
    rates = report.drifted[0].rates
    assert [(r.rate, r.recorded, r.catalog, r.change_percent) for r in rates] == [
        ("input", Decimal(2_600_000_000), Decimal(2_500_000_000), Decimal("4.00")),
        ("cache_write_5m", Decimal(3_250_000_000), Decimal(2_500_000_000), Decimal("30.00")),  # its default, 1.25 ×
        ("cache_write_1h", Decimal(5_200_000_000), Decimal(2_500_000_000), Decimal("108.00")),
        ("per_web_search", Decimal(0), Decimal(10_000_000), Decimal("-100.00")),
    ]
    assert report.no_provider_cost == ["claude/claude-3-haiku"]  # in the catalog, but no cost recorded
    assert report.not_in_catalog == ["openai/my-own"]
    finer = [r.rate for r in drift.report(CATALOG, [], Decimal("0.1")).drifted[0].rates]
    assert finer == ["input", "cache_write_5m", "cache_write_1h", "output", "reasoning", "per_web_search"]
    assert drift.report(CATALOG, [], Decimal(200)).drifted == []


def test_a_rate_the_catalog_gives_as_zero_drifts_from_any_other() -> None:
    assert [r.rate for r in compare(ModelPrice(input=0, output=1), ModelPrice(input=0, output=0), Decimal(50))] == [
        "output",
        "reasoning",
    ]


def test_models_asked_for_without_a_price_are_counted() -> None:
    rows = [
        Row("openai/gpt-9", T0),
        Row("openai/gpt-9", T0 + timedelta(hours=2), "failed"),
        Row("openai/gpt-4o", T0),
        Row("claude/new", T0 + timedelta(hours=1)),
        Row("openai/gpt-9", T0 + timedelta(hours=1)),
    ]
    found = missing_prices(rows, lambda model: model == "openai/gpt-4o")
    assert [(m.model, m.requests, m.failed, m.last_seen) for m in found] == [
        ("openai/gpt-9", 3, 1, T0 + timedelta(hours=2)),
        ("claude/new", 1, 0, T0 + timedelta(hours=1)),
    ]


def test_a_bad_threshold_is_refused(drift: PriceDrift) -> None:
    for threshold in (Decimal(-1), Decimal("NaN"), Decimal(10_001)):
        with pytest.raises(InvalidRequest):
            drift.report(CATALOG, [], threshold)
