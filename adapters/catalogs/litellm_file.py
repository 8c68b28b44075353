"""A price file in LiteLLM's ``model_prices_and_context_window.json`` format as a price
catalog (``--catalog FILE``).

The file is read as JSON with every number kept as exact decimal text (``1.25e-06`` is
``Decimal("1.25E-6")``, never a float). Its costs are US dollars per token (per call for
fees); they are scaled to dollars per 1M tokens exactly.

Fields read, per model entry: ``input_cost_per_token``, ``output_cost_per_token``,
``cache_read_input_token_cost``, ``cache_creation_input_token_cost`` (5-minute writes),
``cache_creation_input_token_cost_above_1hr``, ``output_cost_per_reasoning_token``,
``input_cost_per_request`` (a per-request fee), the context tiers
``<field>_above_<N>k_tokens`` (N × 1,000 prompt tokens), the service tiers
``<field>_priority`` / ``<field>_flex`` (and their tiers, ``…_above_<N>k_tokens_priority``),
``max_input_tokens`` (else ``max_tokens``) as the context window, ``max_output_tokens`` as
the output cap, and ``litellm_provider``. Other cost fields (images, audio, per second,
batches, search context) are skipped and reported.

Mapping (the operator's provider kind → ``litellm_provider``): ``openai`` → ``openai``,
``anthropic`` → ``anthropic``, ``gemini`` → ``gemini``, ``bedrock`` → ``bedrock`` or
``bedrock_converse``, ``ollama`` → none; ``openai-compatible`` → by the base URL's host
(``api.deepseek.com`` → ``deepseek``, ``api.x.ai`` → ``xai``, ``openrouter.ai`` →
``openrouter``, ``api.groq.com`` → ``groq``, ``api.mistral.ai`` → ``mistral``,
``api.together.xyz`` → ``together_ai``, ``api.fireworks.ai`` → ``fireworks_ai``), else the
provider's name when the file has that ``litellm_provider``. A model ``M`` is the entry
keyed ``M`` or ``<litellm_provider>/M`` whose ``litellm_provider`` is the mapped one.
The catalog version is ``sha256:`` and the first 12 hex digits of the file's digest.
"""

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from application.price_import import CatalogPrice, CatalogRates, CatalogServiceTier, CatalogTier
from domain.bounds import MAX_TOKENS
from domain.errors import InvalidRequest
from domain.provider import Provider

KIND_PROVIDERS: dict[str, tuple[str, ...]] = {
    "openai": ("openai",),
    "anthropic": ("anthropic",),
    "gemini": ("gemini",),
    "bedrock": ("bedrock", "bedrock_converse"),
}
NO_PRICES = ("ollama",)
HOST_PROVIDERS = {
    "api.deepseek.com": "deepseek",
    "api.x.ai": "xai",
    "openrouter.ai": "openrouter",
    "api.groq.com": "groq",
    "api.mistral.ai": "mistral",
    "api.together.xyz": "together_ai",
    "api.fireworks.ai": "fireworks_ai",
}
RATE_FIELDS = {
    "input": "input_cost_per_token",
    "output": "output_cost_per_token",
    "cached_input": "cache_read_input_token_cost",
    "cache_write_5m": "cache_creation_input_token_cost",
    "cache_write_1h": "cache_creation_input_token_cost_above_1hr",
    "reasoning": "output_cost_per_reasoning_token",
}
FEE_FIELDS = ("input_cost_per_request",)
SERVICE_TIERS = ("priority", "flex")
_TIER = re.compile(r"(?P<field>.+)_above_(?P<thousands>[0-9]+)k_tokens(?:_(?P<service>priority|flex))?")
PER_MILLION = Decimal(1_000_000)
MAX_FILE_BYTES = 64 * 1024 * 1024


class LiteLLMFileCatalog:
    """A LiteLLM-format price file, read once."""

    name = "litellm-file"

    def __init__(self, path: str) -> None:
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise InvalidRequest(f"cannot read the catalog file {path}: {exc.strerror}", param="catalog") from None
        if len(raw) > MAX_FILE_BYTES:
            raise InvalidRequest(f"the catalog file {path} is larger than {MAX_FILE_BYTES} bytes", param="catalog")
        try:
            document = json.loads(raw, parse_float=Decimal)
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidRequest(f"the catalog file {path} is not JSON: {exc}", param="catalog") from None
        if not isinstance(document, dict):
            raise InvalidRequest(f"the catalog file {path} is not a JSON object of models", param="catalog")
        self.entries: dict[str, dict[str, Any]] = {
            key: value for key, value in document.items() if isinstance(value, dict) and key != "sample_spec"
        }
        self.version = "sha256:" + hashlib.sha256(raw).hexdigest()[:12]
        self._providers = {str(entry.get("litellm_provider")) for entry in self.entries.values()}

    def provider_for(self, provider: Provider) -> str | None:
        if provider.kind in NO_PRICES:
            return None
        if provider.kind in KIND_PROVIDERS:
            return provider.kind
        host = urlsplit(provider.base_url or "").hostname or ""
        if host in HOST_PROVIDERS:
            return HOST_PROVIDERS[host]
        return provider.name if provider.name in self._providers else None

    def lookup(self, catalog_provider: str, model: str, at: datetime) -> CatalogPrice | None:
        accepted = KIND_PROVIDERS.get(catalog_provider, (catalog_provider,))
        for key in (model, *(f"{name}/{model}" for name in accepted)):
            entry = self.entries.get(key)
            if entry is not None and entry.get("litellm_provider") in accepted:
                return _price(key, entry)
        return None


def _usd(value: Any, key: str, field: str) -> Decimal:
    """Dollars from a JSON number (read as Decimal), finite and not negative."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise InvalidRequest(f"{key}: {field} must be a number", param="catalog")
    amount = Decimal(value)
    if not amount.is_finite() or amount < 0:
        raise InvalidRequest(f"{key}: {field} must be a finite number, not negative", param="catalog")
    return amount


def _per_million(entry: Mapping[str, Any], key: str, field: str) -> Decimal | None:
    return None if entry.get(field) is None else _usd(entry[field], key, field) * PER_MILLION


def _rates(entry: Mapping[str, Any], key: str, suffix: str = "") -> CatalogRates | None:
    found = {name: _per_million(entry, key, field + suffix) for name, field in RATE_FIELDS.items()}
    input_, output = found.pop("input"), found.pop("output")
    if input_ is None or output is None:
        return None
    return CatalogRates(input=input_, output=output, **found)


def _tiers(entry: Mapping[str, Any], key: str, base: CatalogRates, service: str | None) -> tuple[CatalogTier, ...]:
    """``<field>_above_<N>k_tokens[_<service>]``: one tier per N; a rate a tier leaves out is the base's."""
    by_threshold: dict[int, dict[str, Decimal]] = {}
    fields = {field: name for name, field in RATE_FIELDS.items()}
    for name, value in entry.items():
        match = _TIER.fullmatch(name)
        if match is None or match["service"] != service or match["field"] not in fields or value is None:
            continue
        rates = by_threshold.setdefault(int(match["thousands"]) * 1000, {})
        rates[fields[match["field"]]] = _usd(value, key, name) * PER_MILLION
    tiers = []
    for threshold, overrides in sorted(by_threshold.items()):
        tier_rates = {name: getattr(base, name) for name in RATE_FIELDS}
        tier_rates.update(overrides)
        tiers.append(CatalogTier(threshold, CatalogRates(**tier_rates)))
    return tuple(tiers)


def _limit(entry: Mapping[str, Any], *fields: str) -> int | None:
    for field in fields:
        value = entry.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_TOKENS:
            return value
    return None


def _price(key: str, entry: Mapping[str, Any]) -> CatalogPrice | None:
    rates = _rates(entry, key)
    if rates is None:
        return None
    services = []
    for name in SERVICE_TIERS:
        tier_rates = _rates({**entry, **_service_fields(entry, name)}, key, "")
        if tier_rates is not None and any(f"{field}_{name}" in entry for field in RATE_FIELDS.values()):
            services.append(CatalogServiceTier(name, tier_rates, _tiers(entry, key, tier_rates, name)))
    used = set(RATE_FIELDS.values()) | set(FEE_FIELDS)
    skipped = sorted(
        name
        for name, value in entry.items()
        if "cost" in name and value and name not in used and not _is_tier_or_service(name)
    )
    fee = entry.get(FEE_FIELDS[0])
    return CatalogPrice(
        provider=str(entry.get("litellm_provider")),
        model=key,
        rates=rates,
        context_tiers=_tiers(entry, key, rates, None),
        service_tiers=tuple(services),
        per_request=Decimal(0) if fee is None else _usd(fee, key, FEE_FIELDS[0]),
        context_window=_limit(entry, "max_input_tokens", "max_tokens"),
        max_output_tokens=_limit(entry, "max_output_tokens"),
        skipped=tuple(skipped),
    )


def _service_fields(entry: Mapping[str, Any], service: str) -> dict[str, Any]:
    """A service tier's rates over the base ones: ``<field>_<service>`` where given."""
    return {
        field: entry[f"{field}_{service}"]
        for field in RATE_FIELDS.values()
        if entry.get(f"{field}_{service}") is not None
    }


def _is_tier_or_service(name: str) -> bool:
    if _TIER.fullmatch(name):
        return True
    return any(name == f"{field}_{service}" for field in RATE_FIELDS.values() for service in SERVICE_TIERS)
