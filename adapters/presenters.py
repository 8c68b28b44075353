"""JSON-ready views of ledger objects, shared by the CLI's ``--json`` output and the
admin API so both say the same thing. Secrets never appear: credentials show only
a masked hint, API keys only their visible prefix."""

from dataclasses import asdict, is_dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from domain.api_key import ApiKey
from domain.money import format_credits
from domain.price_book import PriceBook
from domain.provider import Provider
from domain.request_record import RequestRecord


def provider_json(provider: Provider) -> dict[str, Any]:
    return {
        "name": provider.name,
        "kind": provider.kind,
        "base_url": provider.base_url,
        "region": provider.region,
        "enabled": provider.enabled,
        "credentials": [
            {
                "id": c.credential_id,
                "hint": c.hint,
                "weight": c.weight,
                "enabled": c.enabled,
                "disabled_reason": c.disabled_reason,
                "disabled_automatically": c.disabled_automatically,
            }
            for c in provider.credentials
        ],
        **provider.policy.to_dict(),  # timeout_connect, timeout_first_byte, timeout_total, retries, retry_base_ms
    }


def api_key_json(key: ApiKey) -> dict[str, Any]:
    return {
        "id": str(key.id),
        "account_id": str(key.account_id),
        "name": key.name,
        "prefix": key.prefix,
        "revoked": key.revoked,
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
    }


def price_book_json(book: PriceBook, now: datetime) -> dict[str, Any]:
    """The version in effect now, and any published to take effect later."""
    current = book.effective(now)
    upcoming = [v for v in book.versions if v["version"] > current.number]
    return {
        "version": current.number,
        "effective_at": current.effective_at.isoformat() if current.effective_at else None,
        "models": {model: price_json(data) for model, data in current.prices.items()},
        "upcoming": [
            {
                "version": v["version"],
                "effective_at": v["effective_at"].isoformat(),
                "models": {m: price_json(d) for m, d in v["prices"].items()},
            }
            for v in upcoming
        ],
    }


def price_json(data: dict[str, Any]) -> dict[str, Any]:
    """Rates as exact decimal credits per 1M tokens (per image / web search / request); the
    cache-write rates, web-search fee and tiers only when the price sets them. A cache-write
    rate the price leaves unset is shown as its default (1.25 x / 2 x input)."""
    shown = _rates_json(data, ("input", "cached_input", "output", "reasoning", "per_image", "per_request"))
    if "max_output_tokens" in data:
        shown["max_output_tokens"] = data["max_output_tokens"]
    if data.get("context_window") is not None:
        shown["context_window"] = data["context_window"]
    if data.get("source") is not None:
        shown["source"] = data["source"]
    if data.get("provider_cost"):
        shown["provider_cost"] = price_json(data["provider_cost"])
    _deeper_json(data, shown)
    if data.get("per_web_search"):
        shown["per_web_search"] = format_credits(data["per_web_search"])
    return shown


def _rates_json(data: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {name: None if data.get(name) is None else format_credits(data[name]) for name in names}


def _deeper_json(data: dict[str, Any], shown: dict[str, Any]) -> None:
    """Cache-write rates (when any rate of the price is deeper than the original ones) and tiers."""
    deeper = any(data.get(name) is not None for name in ("cache_write_5m", "cache_write_1h"))
    if deeper or data.get("context_tiers") or data.get("service_tiers"):
        shown.update(_cache_writes_json(data))
    if data.get("context_tiers"):
        shown["context_tiers"] = [_tier_json(tier) for tier in data["context_tiers"]]
    if data.get("service_tiers"):
        shown["service_tiers"] = {name: _tier_json(tier) for name, tier in data["service_tiers"].items()}


def _cache_writes_json(data: dict[str, Any]) -> dict[str, str]:
    def rate(name: str, quarters: int) -> str:
        value = data.get(name)
        return format_credits(value) if value is not None else format_quarters(data["input"] * quarters)

    return {"cache_write_5m": rate("cache_write_5m", 5), "cache_write_1h": rate("cache_write_1h", 8)}


def _tier_json(tier: dict[str, Any]) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    if "above_input_tokens" in tier:
        shown["above_input_tokens"] = tier["above_input_tokens"]
    shown.update(_rates_json(tier, ("input", "cached_input", "output", "reasoning")))
    shown.update(_cache_writes_json(tier))
    if tier.get("context_tiers"):
        shown["context_tiers"] = [_tier_json(inner) for inner in tier["context_tiers"]]
    return shown


def format_quarters(quarter_nanocredits: int) -> str:
    """Quarter-nanocredits (a default cache-write rate, 1.25 x input, exact) as decimal credits:
    nine decimal places, and the quarter's digits beyond them when there is one."""
    whole, rest = divmod(quarter_nanocredits, 4)
    return format_credits(whole) + ("", "25", "5", "75")[rest]


def id_text(value: UUID | str | None) -> str | None:
    """An id in its one textual form, the dashed UUID the API shows, from a UUID or from
    the 32 hex digits the events and read models keep (``None``/``""`` as they are)."""
    if not value:
        return value  # type: ignore[return-value]
    if isinstance(value, UUID):
        return str(value)
    if len(value) == 32:
        return f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}".lower()
    return str(UUID(value))


def request_record_json(record: RequestRecord) -> dict[str, Any]:
    """A request's record as the ledger holds it (its stored keys), its ids in the form the
    API shows (the record's details keep the account and key ids as hex)."""
    details = record.details.to_dict()
    for name in ("account_id", "api_key_id"):
        if isinstance(details.get(name), str):
            details[name] = id_text(details[name])
    return {
        "id": str(record.id),
        "recorded_at": record.created_on.isoformat(),
        **details,
        "attempts": [attempt.to_dict() for attempt in record.attempts],
    }


def money_fields(row: dict[str, Any], *names: str) -> dict[str, Any]:
    """Add ``<name>_credits`` decimal text beside each integer nanocredit field."""
    for name in names:
        if isinstance(row.get(name), int):
            row[f"{name}_credits"] = format_credits(row[name])
    return row


def signed_credits(amount: int) -> str:
    """Decimal credits with an explicit ``+`` on credits, for statements and reports."""
    return ("+" if amount > 0 else "") + format_credits(amount)


def plain(value: Any) -> Any:
    """Dataclasses, UUIDs and datetimes → JSON-safe values (ints stay ints)."""
    if is_dataclass(value) and not isinstance(value, type):
        return {key: plain(item) for key, item in asdict(value).items()}
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def balance_json(row: Any) -> dict[str, Any]:
    data = plain(row)
    return money_fields(
        data,
        "balance",
        "held",
        "available",
        "granted_total",
        "charged_total",
        "uncollected_total",
        "refunded_total",
        "adjusted_total",
        "expired_total",
    )
