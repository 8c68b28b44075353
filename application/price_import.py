"""Importing prices from a price catalog (``tallyhub prices import``): a complete new
price-book version built from the current one plus a catalog's rates, with a margin.

Invariants kept here:
- an import is a normal price-book version (domain/price_book.py): published whole,
  never editing an earlier one; a dry run builds the same version and publishes nothing;
- a price the catalog does not have stays exactly as it is; an imported price records
  where it came from in ``ModelPrice.source`` (``"<catalog> <version> <provider>/<model>"``);
- money is ``Decimal`` from the catalog's text to the one rounding, never a float: a
  catalog rate is US dollars per 1M tokens (fees: per call); the provider cost is
  ``usd × credits_per_usd`` and the sell rate ``usd × (1 + margin/100) × credits_per_usd``,
  each computed exactly and rounded ONCE, half up, to a whole nanocredit (per 1M tokens
  for a token rate, per call for a fee). The sell rate is rounded from the exact product,
  never from the rounded cost;
- the catalog's semantics are kept: a cache write the catalog does not price is charged
  as it charges it (the 1-hour write at the 5-minute write's rate, that at the input
  rate), written out explicitly, since the price book's own defaults (1.25 × / 2 × input)
  are Anthropic's and not every catalog's.

Which models: ``models`` when given (each must be in the catalog); otherwise every model
of the chosen providers that the current version already prices or that callers asked
for (the request log), whichever the catalog has.
"""

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any, Protocol

from domain.errors import InvalidRequest
from domain.money import NANOCREDITS_PER_CREDIT
from domain.pricing import DEFAULT_OUTPUT_CAP, ContextTier, InvalidPrice, ModelPrice, ServiceTierPrice
from domain.provider import Provider

MAX_MARGIN_PERCENT = Decimal(10_000)
_EXACT = Context(prec=80)  # far more digits than any rate × factor needs: the product is exact


@dataclass(frozen=True, slots=True)
class CatalogRates:
    """A catalog's per-token rates in US dollars per 1M tokens; None: the catalog has none
    (cache reads then cost the input rate, reasoning the output rate, a 1-hour cache write
    the 5-minute one's, a 5-minute one the input rate)."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write_5m: Decimal | None = None
    cache_write_1h: Decimal | None = None
    reasoning: Decimal | None = None


@dataclass(frozen=True, slots=True)
class CatalogTier:
    """Rates for the whole request when its prompt is strictly above ``above_input_tokens``."""

    above_input_tokens: int
    rates: CatalogRates


@dataclass(frozen=True, slots=True)
class CatalogServiceTier:
    name: str
    rates: CatalogRates
    context_tiers: tuple[CatalogTier, ...] = ()


@dataclass(frozen=True, slots=True)
class CatalogPrice:
    """One model's price in a catalog (US dollars); ``skipped`` names the catalog's price
    keys a price book cannot hold (audio, images, storage…), reported, never imported."""

    provider: str  # the catalog's provider id
    model: str  # the catalog's model id
    rates: CatalogRates
    context_tiers: tuple[CatalogTier, ...] = ()
    service_tiers: tuple[CatalogServiceTier, ...] = ()
    per_request: Decimal = Decimal(0)  # dollars per request
    per_web_search: Decimal = Decimal(0)  # dollars per web search call
    context_window: int | None = None
    max_output_tokens: int | None = None
    skipped: tuple[str, ...] = ()


class PriceCatalog(Protocol):
    """A source of provider prices (adapters/catalogs/)."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    def provider_for(self, provider: Provider) -> str | None:
        """The catalog's provider for one of the operator's providers; None: the catalog has none."""

    def lookup(self, catalog_provider: str, model: str, at: datetime) -> CatalogPrice | None:
        """The catalog's price of ``model`` (the upstream id) at time ``at``; None: not in the catalog."""


@dataclass(frozen=True, slots=True)
class Markup:
    """``margin_percent`` over cost, and how many credits one US dollar is."""

    margin_percent: Decimal = Decimal(0)
    credits_per_usd: Decimal = Decimal(1)

    def __post_init__(self) -> None:
        if not (self.margin_percent.is_finite() and 0 <= self.margin_percent <= MAX_MARGIN_PERCENT):
            raise InvalidRequest(f"the margin must be a percentage from 0 to {MAX_MARGIN_PERCENT}", param="margin")
        if not (self.credits_per_usd.is_finite() and self.credits_per_usd > 0):
            raise InvalidRequest("credits per US dollar must be a positive number", param="credits_per_usd")

    @property
    def sell_factor(self) -> Decimal:
        return _EXACT.multiply(_EXACT.add(1, _EXACT.divide(self.margin_percent, Decimal(100))), self.credits_per_usd)


def nanocredits(usd: Decimal, factor: Decimal) -> int:
    """``usd × factor`` credits as whole nanocredits: exact product, rounded once, half up."""
    exact = _EXACT.multiply(_EXACT.multiply(usd, factor), Decimal(NANOCREDITS_PER_CREDIT))
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP, context=_EXACT))


def _rate_fields(rates: CatalogRates, factor: Decimal) -> dict[str, Any]:
    def at(usd: Decimal | None) -> int | None:
        return None if usd is None else nanocredits(usd, factor)

    write_5m = rates.cache_write_5m if rates.cache_write_5m is not None else rates.input
    write_1h = rates.cache_write_1h if rates.cache_write_1h is not None else write_5m
    return {
        "input": at(rates.input),
        "output": at(rates.output),
        "cached_input": at(rates.cached_input),
        "reasoning": at(rates.reasoning),
        "cache_write_5m": at(write_5m),
        "cache_write_1h": at(write_1h),
    }


def _tiers(tiers: Iterable[CatalogTier], factor: Decimal) -> tuple[ContextTier, ...]:
    return tuple(ContextTier(tier.above_input_tokens, **_rate_fields(tier.rates, factor)) for tier in tiers)


def catalog_model_price(entry: CatalogPrice, factor: Decimal) -> ModelPrice:
    """The catalog's rates × ``factor`` credits, as a price (no cap, no source)."""
    services = tuple(
        (
            tier.name,
            ServiceTierPrice(**_rate_fields(tier.rates, factor), context_tiers=_tiers(tier.context_tiers, factor)),
        )
        for tier in entry.service_tiers
    )
    return ModelPrice(
        **_rate_fields(entry.rates, factor),
        per_request=nanocredits(entry.per_request, factor),
        per_web_search=nanocredits(entry.per_web_search, factor),
        context_tiers=_tiers(entry.context_tiers, factor),
        service_tiers=services,
    )


def imported_price(
    entry: CatalogPrice, markup: Markup, source: str, current: ModelPrice | None, model: str
) -> ModelPrice:
    """The sell price for ``entry``: the catalog's rates with the margin, its cost as
    ``provider_cost``; ``per_image`` kept from ``current``, and its output cap and context
    window where the catalog has none."""
    try:
        cost = catalog_model_price(entry, markup.credits_per_usd)
        sell = catalog_model_price(entry, markup.sell_factor)
        return replace(
            sell,
            provider_cost=cost,
            per_image=current.per_image if current else 0,
            max_output_tokens=_first(
                entry.max_output_tokens, current.max_output_tokens if current else None, DEFAULT_OUTPUT_CAP
            ),
            context_window=_first(entry.context_window, current.context_window if current else None, None),
            source=source,
        )
    except InvalidPrice as exc:
        raise InvalidRequest(f"{model}: the imported price is out of bounds: {exc}", param="catalog") from None


def _first(*values: Any) -> Any:
    return next((value for value in values if value is not None), None)


@dataclass(frozen=True)
class PriceChange:
    model: str
    old: ModelPrice | None  # None: added
    new: ModelPrice


@dataclass
class ImportPlan:
    """What an import would publish: the whole version and its diff against the current one."""

    catalog: str
    catalog_version: str
    base_version: int
    prices: dict[str, ModelPrice]
    added: list[PriceChange] = field(default_factory=list)
    changed: list[PriceChange] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    not_in_catalog: list[str] = field(default_factory=list)  # kept as they are
    skipped_keys: dict[str, list[str]] = field(default_factory=dict)  # model -> catalog keys not imported
    published_version: int | None = None

    @property
    def has_changes(self) -> bool:
        return bool(self.added or self.changed)


def _same(old: ModelPrice, new: ModelPrice) -> bool:
    """Equal rates and limits (where the price came from does not count)."""
    return replace(old, source=None).to_dict() == replace(new, source=None).to_dict()


class PriceImport:
    """Build (and publish) price-book versions from a catalog.

    ``current`` gives the latest published version's number and prices; ``publish``
    publishes a complete version (application/prices.py ``Prices.publish_prices``)."""

    def __init__(
        self,
        providers: Callable[[], list[Provider]],
        current: Callable[[], tuple[int, dict[str, ModelPrice]]],
        publish: Callable[[dict[str, ModelPrice], datetime | None], int],
        now: Callable[[], datetime],
    ) -> None:
        self.providers, self.current, self.publish, self.now = providers, current, publish, now

    def plan(
        self,
        catalog: PriceCatalog,
        markup: Markup,
        *,
        provider: str | None = None,
        models: list[str] | None = None,
        asked: Iterable[str] = (),
        at: datetime | None = None,
    ) -> ImportPlan:
        """The version an import would publish (nothing is published)."""
        version, prices = self.current()
        chosen = self._chosen_providers(catalog, provider)
        wanted = self._wanted(chosen, prices, models, asked)
        plan = ImportPlan(catalog.name, catalog.version, version, dict(prices))
        when = at or self.now()
        missing = []
        for model in sorted(wanted):
            name, _, upstream = model.partition("/")
            entry = catalog.lookup(chosen[name], upstream, when)
            if entry is None:
                missing.append(model)
                continue
            source = f"{catalog.name} {catalog.version} {entry.provider}/{entry.model}"
            new = imported_price(entry, markup, source, prices.get(model), model)
            if entry.skipped:
                plan.skipped_keys[model] = list(entry.skipped)
            self._record(plan, model, prices.get(model), new)
        if models and missing:
            raise InvalidRequest(f"the catalog {catalog.name} has no price for {', '.join(missing)}", param="models")
        plan.not_in_catalog = missing
        return plan

    def apply(self, plan: ImportPlan, effective_at: datetime | None = None) -> ImportPlan:
        """Publish the planned version (when it changes anything); sets ``published_version``."""
        if plan.has_changes:
            plan.published_version = self.publish(plan.prices, effective_at)
        return plan

    @staticmethod
    def _record(plan: ImportPlan, model: str, old: ModelPrice | None, new: ModelPrice) -> None:
        if old is None:
            plan.added.append(PriceChange(model, None, new))
        elif _same(old, new):
            plan.unchanged.append(model)
            return
        else:
            plan.changed.append(PriceChange(model, old, new))
        plan.prices[model] = new

    def _chosen_providers(self, catalog: PriceCatalog, provider: str | None) -> dict[str, str]:
        """The operator's providers to import for, each with its catalog provider."""
        registered = {found.name: found for found in self.providers()}
        if provider is not None and provider not in registered:
            raise InvalidRequest(f"no provider {provider!r} is registered", param="provider")
        names = [provider] if provider is not None else sorted(registered)
        chosen = {}
        for name in names:
            catalog_provider = catalog.provider_for(registered[name])
            if catalog_provider is not None:
                chosen[name] = catalog_provider
            elif provider is not None:
                raise InvalidRequest(
                    f"the catalog {catalog.name} has no prices for provider {name!r} (kind {registered[name].kind})",
                    param="provider",
                )
        return chosen

    @staticmethod
    def _wanted(
        chosen: Mapping[str, str], prices: Mapping[str, ModelPrice], models: list[str] | None, asked: Iterable[str]
    ) -> set[str]:
        if models:
            for model in models:
                name, _, upstream = model.partition("/")
                if not upstream:
                    raise InvalidRequest(f"a model id is PROVIDER/MODEL, got {model!r}", param="models")
                if name not in chosen:
                    raise InvalidRequest(
                        f"{model}: provider {name!r} is not registered, not chosen, or not in the catalog",
                        param="models",
                    )
            return set(models)
        return {model for model in (*prices, *asked) if model.partition("/")[0] in chosen and "/" in model}
