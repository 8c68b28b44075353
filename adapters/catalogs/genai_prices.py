"""The ``genai-prices`` package as a price catalog (``--catalog genai-prices``).

The package ships its data (``genai_prices.data``); this reader uses that bundled data
only. The package can also fetch newer data in a background thread (``UpdatePrices``);
nothing here starts it, and the snapshot read is the bundled one even if some other code
in the process installed a fetched one, so an import never touches the network and the
catalog version is the package's version.

Mapping (the operator's provider kind → the package's provider id): ``openai`` → ``openai``,
``anthropic`` → ``anthropic``, ``gemini`` → ``google``, ``bedrock`` → ``aws``, ``ollama`` →
none (local models have no price); ``openai-compatible`` → the package provider whose API
URL pattern matches the provider's base URL (DeepSeek, xAI, OpenRouter, Groq, Mistral…), else
the one whose id matches the provider's name. A provider of another kind with a base URL is
matched by that URL first (an ``openai`` provider pointed at Azure is Azure). A model is
found with the package's own matching (its aliases and dated ids).

Price keys: ``input_mtok``, ``output_mtok``, ``cache_read_mtok`` (cached input),
``cache_write_mtok`` / ``cache_write_5m_mtok`` (5-minute writes), ``cache_write_1h_mtok``,
``output_reasoning_mtok``, ``requests_kcount`` and ``web_searches_kcount`` (per 1,000 calls).
A key's token tiers (the package's ``TieredPrices``, whole-request "cliff" pricing above a
total-input threshold, as the price book's context tiers) become context tiers, one per
threshold any key has. Service-tier variants (``{"service_tier": NAME}``) in effect at the
import's time become service tiers. Other keys (audio, images, storage…) are skipped and
reported.
"""

from datetime import datetime
from decimal import Decimal
from importlib.metadata import version as package_version
from typing import Any

from genai_prices import data_snapshot, types

from application.price_import import CatalogPrice, CatalogRates, CatalogServiceTier, CatalogTier
from domain.pricing import BASE_SERVICE_TIER
from domain.provider import Provider

KIND_PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "gemini": "google", "bedrock": "aws"}
NO_PRICES = ("ollama",)
RATE_KEYS = {
    "input": ("input_mtok",),
    "output": ("output_mtok",),
    "cached_input": ("cache_read_mtok",),
    "cache_write_5m": ("cache_write_5m_mtok", "cache_write_mtok"),
    "cache_write_1h": ("cache_write_1h_mtok",),
    "reasoning": ("output_reasoning_mtok",),
}
FEE_KEYS = {"per_request": "requests_kcount", "per_web_search": "web_searches_kcount"}
KNOWN_KEYS = frozenset(key for keys in RATE_KEYS.values() for key in keys) | frozenset(FEE_KEYS.values())


class GenaiPricesCatalog:
    """The bundled ``genai-prices`` data."""

    name = "genai-prices"

    def __init__(self) -> None:
        self.version = package_version("genai-prices")
        self._snapshot = data_snapshot._bundled_snapshot()  # never the auto-updated one

    def provider_for(self, provider: Provider) -> str | None:
        if provider.kind in NO_PRICES:
            return None
        if provider.base_url:
            try:
                return self._snapshot.find_provider(None, None, provider.base_url.rstrip("/")).id
            except LookupError:
                pass
        if provider.kind in KIND_PROVIDERS:
            return KIND_PROVIDERS[provider.kind]
        found = data_snapshot.find_provider_by_id(self._snapshot.providers, provider.name)
        return found.id if found is not None else None

    def lookup(self, catalog_provider: str, model: str, at: datetime) -> CatalogPrice | None:
        found = data_snapshot.find_provider_by_id(self._snapshot.providers, catalog_provider)
        if found is None:
            return None
        info = found.find_model(model, all_providers=self._snapshot.providers)
        if info is None:
            return None
        base = info.get_prices(at)
        if _price(base, "input_mtok") is None or _price(base, "output_mtok") is None:
            return None  # not a token-priced model (audio, embeddings by the hour…)
        rates, tiers = _rates(base)
        return CatalogPrice(
            provider=found.id,
            model=info.id,
            rates=rates,
            context_tiers=tiers,
            service_tiers=_service_tiers(info, at),
            per_request=_fee(base, FEE_KEYS["per_request"]),
            per_web_search=_fee(base, FEE_KEYS["per_web_search"]),
            context_window=info.context_window,
            skipped=tuple(sorted(key for key, value in _items(base) if value is not None and key not in KNOWN_KEYS)),
        )


def _items(price: types.ModelPrice) -> list[tuple[str, Any]]:
    return [(key, value) for key, value in price.__dict__.items() if not key.startswith("_")]


def _price(price: types.ModelPrice, key: str) -> Decimal | types.TieredPrices | None:
    value = price.__dict__.get(key)
    return value if isinstance(value, Decimal | types.TieredPrices) else None


def _fee(price: types.ModelPrice, key: str) -> Decimal:
    """Dollars per call (the package prices per 1,000); a tiered fee takes its base."""
    value = _price(price, key)
    if value is None:
        return Decimal(0)
    per_thousand = value.base if isinstance(value, types.TieredPrices) else value
    return per_thousand / 1000  # exact: a division by 10**3


def _rate_at(price: types.ModelPrice, keys: tuple[str, ...], input_tokens: int) -> Decimal | None:
    """The first of ``keys`` the price has, at a prompt of ``input_tokens`` (the package's rule:
    a tier applies when the prompt is strictly above its start)."""
    for key in keys:
        value = _price(price, key)
        if isinstance(value, types.TieredPrices):
            applicable = value.base
            for tier in value.tiers:  # sorted by start
                if input_tokens > tier.start:
                    applicable = tier.price
            return applicable
        if value is not None:
            return value
    return None


def _rates_at(price: types.ModelPrice, input_tokens: int) -> CatalogRates:
    found = {name: _rate_at(price, keys, input_tokens) for name, keys in RATE_KEYS.items()}
    input_, output = found.pop("input"), found.pop("output")
    assert input_ is not None and output is not None
    return CatalogRates(input=input_, output=output, **found)


def _rates(price: types.ModelPrice) -> tuple[CatalogRates, tuple[CatalogTier, ...]]:
    """The base rates, and one context tier per threshold any rate has."""
    starts = sorted(
        {
            tier.start
            for keys in RATE_KEYS.values()
            for key in keys
            if isinstance(value := _price(price, key), types.TieredPrices)
            for tier in value.tiers
        }
    )
    tiers = tuple(CatalogTier(start, _rates_at(price, start + 1)) for start in starts)
    return _rates_at(price, 0), tiers


def _service_tiers(info: types.ModelInfo, at: datetime) -> tuple[CatalogServiceTier, ...]:
    names = []
    for variant in info.price_variants or ():
        name = variant.when.get("service_tier")
        if (
            set(variant.when) == {"service_tier"}
            and name
            and name != BASE_SERVICE_TIER
            and name not in names
            and (variant.constraint is None or variant.constraint.active(at))
        ):
            names.append(name)
    tiers = []
    for name in names:
        resolved = info.get_prices(at, {"service_tier": name})
        if _price(resolved, "input_mtok") is None or _price(resolved, "output_mtok") is None:
            continue
        rates, context_tiers = _rates(resolved)
        tiers.append(CatalogServiceTier(name, rates, context_tiers))
    return tuple(tiers)
