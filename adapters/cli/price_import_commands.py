"""``tallyhub prices import`` and ``tallyhub prices drift`` (application/price_import.py,
application/price_drift.py; catalogs in adapters/catalogs/). Their flags
are in adapters/cli/table.py.

Each handler returns ``(json_data, human_text)``; rates in both are exact decimal credits
per 1M tokens (per call for a fee), as ``prices show`` gives them."""

import argparse
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from adapters.catalogs import open_catalog
from adapters.cli.arguments import MAX_DRIFT_DAYS
from adapters.cli.commands import open_services
from adapters.presenters import price_json
from adapters.queries import caught_up
from adapters.services import Services
from application.price_drift import DriftReport, PriceDrift, RateDrift
from application.price_import import ImportPlan, Markup, PriceCatalog, PriceChange, PriceImport
from domain.money import NANOCREDITS_PER_CREDIT, format_credits
from domain.pricing import ModelPrice

Result = tuple[Any, str]
ASKED_DAYS = 30  # the request log read for the models callers asked for (import) by default
MAX_DAYS = MAX_DRIFT_DAYS  # the CLI's --days and the admin API's days share one bound


def _latest(services: Services) -> tuple[int, dict[str, ModelPrice]]:
    latest = services.ledger.price_book().latest
    return latest.number, {model: ModelPrice.from_dict(data) for model, data in latest.prices.items()}


def _in_effect(services: Services) -> tuple[int, dict[str, ModelPrice]]:
    current = services.ledger.price_book().effective(services.ledger.clock.now())
    return current.number, {model: ModelPrice.from_dict(data) for model, data in current.prices.items()}


def _logged(services: Services, days: int) -> Iterator[Any]:
    """The request log of the last ``days``, caught up first, read in batches (streamed)."""
    since = services.ledger.clock.now() - timedelta(days=days)
    requests = services.read_models.requests
    return caught_up(services, lambda: requests.iter_requests(since, None))  # type: ignore[no-any-return]


def run_import(
    services: Services,
    catalog: PriceCatalog,
    markup: Markup,
    *,
    provider: str | None = None,
    models: list[str] | None = None,
    effective_at: datetime | None = None,
    dry_run: bool = False,
) -> ImportPlan:
    """Plan an import against the latest version and, unless ``dry_run``, publish it (the
    CLI and ``POST /admin/v1/prices/import``)."""
    use_case = PriceImport(
        services.ledger.list_providers,
        lambda: _latest(services),
        services.prices.publish_prices,
        services.ledger.clock.now,
    )
    asked = set() if models else {row.model for row in _logged(services, ASKED_DAYS)}
    plan = use_case.plan(catalog, markup, provider=provider, models=models, asked=asked, at=effective_at)
    return plan if dry_run else use_case.apply(plan, effective_at)


def prices_import(args: argparse.Namespace) -> Result:
    catalog = open_catalog(args.catalog)
    markup = Markup(args.margin, args.credits_per_usd)
    with open_services() as services:
        plan = run_import(
            services,
            catalog,
            markup,
            provider=args.provider,
            models=args.models,
            effective_at=args.effective_at,
            dry_run=args.dry_run,
        )
    return import_json(plan, markup, args.dry_run, args.effective_at), _import_text(plan, markup, args.dry_run)


def import_json(plan: ImportPlan, markup: Markup, dry_run: bool, effective_at: datetime | None) -> dict[str, Any]:
    """The import's document: the diff (rates as ``prices show`` gives them) and what was published."""
    return {
        "catalog": plan.catalog,
        "catalog_version": plan.catalog_version,
        "dry_run": bool(dry_run),
        "published": plan.published_version is not None,
        "base_version": plan.base_version,
        "version": plan.published_version if plan.published_version is not None else plan.base_version,
        "margin_percent": str(markup.margin_percent),
        "credits_per_usd": str(markup.credits_per_usd),
        "effective_at": effective_at.isoformat() if effective_at else None,
        "added": [{"model": c.model, "source": c.new.source, "price": price_json(c.new.to_dict())} for c in plan.added],
        "changed": [
            {
                "model": c.model,
                "source": c.new.source,
                "changes": _changes(c),
                "price": price_json(c.new.to_dict()),
            }
            for c in plan.changed
        ],
        "unchanged": len(plan.unchanged),
        "unchanged_models": plan.unchanged,
        "not_in_catalog": plan.not_in_catalog,
        "skipped_keys": plan.skipped_keys,
    }


def _flat(data: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        if isinstance(value, dict) and key != "service_tiers":
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield prefix + key, value


def _changes(change: PriceChange) -> dict[str, dict[str, Any]]:
    """Each shown field that differs: ``{"old": …, "new": …}`` (``provider_cost.input``…)."""
    assert change.old is not None
    old = dict(_flat(price_json(change.old.to_dict())))
    new = dict(_flat(price_json(change.new.to_dict())))
    return {
        name: {"old": old.get(name), "new": new.get(name)}
        for name in sorted(set(old) | set(new))
        if old.get(name) != new.get(name)
    }


TEXT_FIELDS = ("input", "output", "cached_input", "provider_cost.input", "provider_cost.output")


def _shown(value: Any) -> str:
    return "unset" if value is None else str(value)


def _import_text(plan: ImportPlan, markup: Markup, dry_run: bool) -> str:
    head = (
        f"{plan.catalog} {plan.catalog_version}, margin {markup.margin_percent}%, "
        f"credits per USD {markup.credits_per_usd}"
    )
    if dry_run:
        head += f": dry run, nothing published (the price book stays at version {plan.base_version})"
    elif plan.published_version is not None:
        head += f": published price-book version {plan.published_version}"
    else:
        head += f": nothing changed, nothing published (the price book stays at version {plan.base_version})"
    lines = [head]
    for change in plan.added:
        rates = price_json(change.new.to_dict())
        lines.append(f"  + {change.model}  input {rates['input']}  output {rates['output']}  ({change.new.source})")
    for change in plan.changed:
        changes = _changes(change)
        shown = [
            f"{name} {_shown(changes[name]['old'])} -> {_shown(changes[name]['new'])}"
            for name in TEXT_FIELDS
            if name in changes
        ]
        more = len(changes) - len(shown)
        lines.append(
            f"  ~ {change.model}  {', '.join(shown) or 'rates unchanged'}"
            + (f" (+{more} more fields: --json)" if more else "")
        )
    lines.append(f"  {len(plan.added)} added, {len(plan.changed)} changed, {len(plan.unchanged)} unchanged")
    if plan.not_in_catalog:
        lines.append(f"  not in the catalog, kept as they are: {', '.join(plan.not_in_catalog)}")
    for model, keys in plan.skipped_keys.items():
        lines.append(f"  {model}: catalog prices not imported: {', '.join(keys)}")
    return "\n".join(lines)


def drift_report(
    services: Services, catalog: PriceCatalog, threshold: Decimal, credits_per_usd: Decimal, days: int
) -> tuple[DriftReport, datetime]:
    """The drift of the version in effect, and the start of the request log read."""
    since = services.ledger.clock.now() - timedelta(days=days)
    drift = PriceDrift(services.ledger.list_providers, lambda: _in_effect(services), services.ledger.clock.now)
    return drift.report(catalog, _logged(services, days), threshold, credits_per_usd), since


def prices_drift(args: argparse.Namespace) -> Result:
    catalog = open_catalog(args.catalog)
    with open_services() as services:
        report, since = drift_report(services, catalog, args.threshold, args.credits_per_usd, args.days)
    return drift_json(report, since), _drift_text(report, args.days)


def _credits(nanocredits: Decimal) -> str:
    if nanocredits == nanocredits.to_integral_value():
        return format_credits(int(nanocredits))
    return format(nanocredits / NANOCREDITS_PER_CREDIT, "f")


def _rate_json(drift: RateDrift) -> dict[str, Any]:
    return {
        "rate": drift.rate,
        "recorded": _credits(drift.recorded),
        "catalog": _credits(drift.catalog),
        "change_percent": None if drift.change_percent is None else str(drift.change_percent),
    }


def drift_json(report: DriftReport, since: datetime) -> dict[str, Any]:
    return {
        "catalog": report.catalog,
        "catalog_version": report.catalog_version,
        "version": report.version,
        "threshold_percent": str(report.threshold_percent),
        "drifted": [
            {"model": d.model, "source": d.source, "rates": [_rate_json(rate) for rate in d.rates]}
            for d in report.drifted
        ],
        "within_threshold": report.within,
        "no_provider_cost": report.no_provider_cost,
        "not_in_catalog": report.not_in_catalog,
        "missing_prices": [
            {"model": m.model, "requests": m.requests, "failed": m.failed, "last_seen": m.last_seen.isoformat()}
            for m in report.missing_prices
        ],
        "since": since.isoformat(),
    }


def _drift_text(report: DriftReport, days: int) -> str:
    lines = [
        f"price-book version {report.version} against {report.catalog} {report.catalog_version} "
        f"(threshold {report.threshold_percent}%)"
    ]
    for drift in report.drifted:
        rates = ", ".join(
            f"{r.rate} {_credits(r.recorded)} vs {_credits(r.catalog)}"
            + (f" ({r.change_percent:+}%)" if r.change_percent is not None else "")
            for r in drift.rates
        )
        lines.append(f"  drifted  {drift.model} ({drift.source}): {rates}")
    lines.append(
        f"  {len(report.drifted)} drifted, {len(report.within)} within the threshold, "
        f"{len(report.no_provider_cost)} without a provider cost, {len(report.not_in_catalog)} not in the catalog"
    )
    if report.missing_prices:
        lines.append(f"  asked for without a price (last {days} days):")
        for missing in report.missing_prices:
            lines.append(
                f"    {missing.model}  {missing.requests} requests ({missing.failed} failed), "
                f"last {missing.last_seen.isoformat()}"
            )
    else:
        lines.append(f"  no request for an unpriced model in the last {days} days")
    return "\n".join(lines)
