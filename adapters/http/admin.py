"""The admin API under ``/admin/v1``, behind the admin key. Writes go to the ledger;
reads of balances, usage and requests come from the read models (caught up first,
so an operator sees their own writes)."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import APIRouter, Depends, Query, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema

from adapters.cli.limit_commands import limits_json
from adapters.cli.portal_commands import build_portal, link_json
from adapters.http.admin_auth import check_admin_key
from adapters.http.admin_limits import LimitsIn
from adapters.http.services import bearer_token, services_of
from adapters.presenters import (
    api_key_json,
    balance_json,
    id_text,
    plain,
    price_book_json,
    provider_json,
    request_record_json,
)
from adapters.providers.config import check_provider_config
from adapters.queries import (
    caught_up,
    list_request_rows,
    list_usage_rows,
    metadata_pair,
    read_balance,
    request_json,
)
from adapters.services import Services
from adapters.workers.hold_sweeper import sweep
from application.pricing_input import parse_price_file, price_from_entry
from domain.errors import InvalidRequest, NotInCreditsMode
from domain.money import parse_credits
from domain.provider import MAX_CREDENTIAL_WEIGHT, PROVIDER_KINDS, UpstreamPolicy

T = TypeVar("T")


def require_admin(request: Request) -> Services:
    """The edge layer (adapters/http/edge.py) already checked the key before the body was
    read; checked again here so a route never depends on the middleware's order."""
    services = services_of(request)
    check_admin_key(services, bearer_token(request))
    return services


router = APIRouter(prefix="/admin/v1", tags=["admin"])
Admin = Annotated[Services, Depends(require_admin)]


def _text_or_integer(value: Any) -> str | int:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError('credits are decimal text (e.g. "12.5") or a JSON integer of whole credits')
    return value


# Credits as decimal text ("12.5"), or a JSON integer of whole credits (never a float or a
# boolean); domain/money.py reads both strictly and bounds them (domain/bounds.py).
Credits = Annotated[
    str | int,
    PlainValidator(_text_or_integer),
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?$"}, {"type": "integer"}]}),
]


def _utc_when_naive(value: datetime) -> datetime:
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    try:
        aware.astimezone(UTC)  # 9999-12-31T23:59:59-14:00 has no UTC form: refused here, not later
    except OverflowError:
        raise ValueError("the time is out of range once in UTC") from None
    return aware


# An ISO 8601 time; UTC when it names no zone (as the CLI reads --expires and --expires-at).
UtcDateTime = Annotated[datetime, AfterValidator(_utc_when_naive)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# For the OpenAPI document only (the ledger checks these itself, with its own messages): names
# are 1-200 printable characters without spaces, model ids PROVIDER/MODEL.
NAME_PATTERN = r"^[^\s\x00-\x1f\x7f-\x9f]{1,200}$"
MODEL_PATTERN = r"^[^/]+/[\s\S]+$"


class ProviderIn(_Body):
    name: str = Field(json_schema_extra={"pattern": NAME_PATTERN})
    kind: str = Field(
        description=f"one of {', '.join(PROVIDER_KINDS)}", json_schema_extra={"enum": list(PROVIDER_KINDS)}
    )
    base_url: str | None = None
    region: str | None = None
    api_key: str | None = Field(default=None, description="the provider secret; stored encrypted, never returned")
    weight: int = Field(default=1, ge=1)
    timeout_connect: float | None = Field(default=None, description="seconds to open the connection; null: 10")
    timeout_first_byte: float | None = Field(
        default=None, description="seconds until the response's headers arrive; null: no bound of its own"
    )
    timeout_total: float | None = Field(
        default=None, description="seconds for the whole exchange; null: TALLYHUB_UPSTREAM_TIMEOUT_SECONDS"
    )
    retries: int | None = Field(default=None, description="retries of the same credential before failing over; null: 0")
    retry_base_ms: int | None = Field(default=None, description="backoff base delay in milliseconds; null: 250")


class ProviderPolicyIn(_Body):
    """A provider's timeouts and retries to change; a field left out keeps its value, null
    puts it back to its default (docs/providers.md, "Retries and timeouts")."""

    timeout_connect: float | None = None
    timeout_first_byte: float | None = None
    timeout_total: float | None = None
    retries: int | None = None
    retry_base_ms: int | None = None


def _policy_changes(body: BaseModel) -> dict[str, Any]:
    """The policy fields the body set, null read as the field's default."""
    defaults = UpstreamPolicy().to_dict()
    fields = ("timeout_connect", "timeout_first_byte", "timeout_total", "retries", "retry_base_ms")
    return {
        name: defaults[name] if getattr(body, name) is None else getattr(body, name)
        for name in fields
        if name in body.model_fields_set
    }


class CredentialIn(_Body):
    api_key: str = Field(
        description="the provider secret; stored encrypted, never returned", json_schema_extra={"minLength": 1}
    )
    weight: int = Field(default=1, ge=1)


class CredentialWeightIn(_Body):
    weight: int = Field(
        ge=1, le=MAX_CREDENTIAL_WEIGHT, strict=True, description="the credential's share of traffic, a JSON integer"
    )


class AliasIn(_Body):
    models: list[str] = Field(
        description="PROVIDER/MODEL to serve the alias, then fallbacks in order",
        json_schema_extra={"minItems": 1, "maxItems": 9, "items": {"type": "string", "pattern": MODEL_PATTERN}},
    )


class PriceIn(_Body):
    model: str = Field(description="PROVIDER/MODEL", json_schema_extra={"pattern": MODEL_PATTERN})
    input: Credits = Field(description="credits per 1M input tokens, decimal text")
    output: Credits = Field(description="credits per 1M output tokens, decimal text")
    cached_input: Credits | None = None
    reasoning: Credits | None = None
    per_image: Credits | None = None
    per_request: Credits | None = None
    max_output_tokens: int | None = None
    context_window: int | None = Field(default=None, description="the model's context window in tokens (informational)")
    cache_write: Credits | None = Field(default=None, description="the 5-minute cache-write rate (= cache_write_5m)")
    cache_write_5m: Credits | None = Field(default=None, description="default: 1.25 x input")
    cache_write_1h: Credits | None = Field(default=None, description="default: 2 x input")
    per_web_search: Credits | None = Field(default=None, description="credits per server-side web search call")
    context_tiers: list[dict[str, Any]] | None = Field(
        default=None, description='[{"above_input_tokens": 200000, "input": "2.5", "output": "15", ...}]'
    )
    service_tiers: dict[str, dict[str, Any]] | None = Field(
        default=None, description='{"flex": {"input": "0.625", "output": "5"}, ...}'
    )
    provider_cost: dict[str, Any] | None = Field(default=None, description="the same rate fields, the provider's")


class AccountIn(_Body):
    name: str = Field(json_schema_extra={"pattern": NAME_PATTERN})
    starter_credits: Credits | None = Field(default=None, description="default: TALLYHUB_STARTER_CREDITS")


class CapsIn(_Body):
    day: Credits | None = Field(default=None, description="credits per UTC day; null: no cap")
    month: Credits | None = Field(default=None, description="credits per UTC month; null: no cap")
    api_key_id: str | None = Field(default=None, description="cap one API key of the account instead")


class AdjustmentIn(_Body):
    amount: Credits = Field(description="credits, decimal text; negative debits (never below zero)")
    reason: str
    idempotency_key: str | None = None


class GrantIn(_Body):
    amount: Credits = Field(description="credits, decimal text")
    reason: str = ""
    idempotency_key: str | None = None
    expires_at: UtcDateTime | None = Field(
        default=None, description="ISO 8601, in the future (UTC when it names no zone); what is unspent then expires"
    )


class KeyIn(_Body):
    name: str = ""
    expires_at: UtcDateTime | None = Field(default=None, description="ISO 8601 (UTC when it names no zone)")


async def _run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))


@router.post("/providers", status_code=201)
async def add_provider(body: ProviderIn, services: Admin) -> dict[str, Any]:
    check_provider_config(body.kind, body.base_url, body.region)
    changes = _policy_changes(body)
    provider = await _run(
        services.provider_registry.register_provider,
        body.name,
        body.kind,
        base_url=body.base_url,
        region=body.region,
        secret=body.api_key,
        weight=body.weight,
        policy=UpstreamPolicy(**changes) if changes else None,
    )
    return provider_json(provider)


@router.patch("/providers/{name}")
async def update_provider(name: str, body: ProviderPolicyIn, services: Admin) -> dict[str, Any]:
    """Change the provider's timeouts and retries; the fields left out keep their values."""
    changes = _policy_changes(body)
    if not changes:
        raise InvalidRequest(
            "give at least one of timeout_connect, timeout_first_byte, timeout_total, retries, retry_base_ms"
        )
    return provider_json(await _run(services.provider_registry.set_policy, name, **changes))


@router.get("/providers/{name}")
async def show_provider(name: str, services: Admin) -> dict[str, Any]:
    return provider_json(await _run(services.ledger.get_provider, name))


@router.post("/providers/{name}/credentials", status_code=201)
async def add_credential(name: str, body: CredentialIn, services: Admin) -> dict[str, Any]:
    return provider_json(await _run(services.provider_registry.add_credential, name, body.api_key, body.weight))


@router.patch("/providers/{name}/credentials/{credential_id}")
async def set_credential_weight(
    name: str, credential_id: str, body: CredentialWeightIn, services: Admin
) -> dict[str, Any]:
    """Change a credential's weight (as ``tallyhub providers weight``); answers the provider."""
    return provider_json(await _run(services.provider_registry.set_credential_weight, name, credential_id, body.weight))


@router.post("/providers/{name}/disable")
async def disable_provider(name: str, services: Admin, credential: str | None = None) -> dict[str, Any]:
    if credential:
        return provider_json(
            await _run(services.provider_registry.disable_credential, name, credential, "disabled by the operator")
        )
    return provider_json(await _run(services.provider_registry.disable_provider, name))


@router.post("/providers/{name}/enable")
async def enable_provider(name: str, services: Admin, credential: str | None = None) -> dict[str, Any]:
    if credential:
        return provider_json(await _run(services.provider_registry.enable_credential, name, credential))
    return provider_json(await _run(services.provider_registry.enable_provider, name))


@router.put("/aliases/{name}")
async def set_alias(name: str, body: AliasIn, services: Admin) -> dict[str, Any]:
    return {"name": name, "models": await _run(services.prices.set_alias, name, body.models)}


@router.get("/aliases")
async def list_aliases(services: Admin) -> dict[str, Any]:
    aliases = await _run(services.prices.aliases)
    return {"data": [{"name": name, "models": models} for name, models in sorted(aliases.items())]}


@router.delete("/aliases/{name}")
async def remove_alias(name: str, services: Admin) -> dict[str, Any]:
    await _run(services.prices.remove_alias, name)
    return {"name": name, "removed": True}


@router.get("/providers")
async def list_providers(services: Admin) -> dict[str, Any]:
    providers = await _run(services.ledger.list_providers)
    return {"data": [provider_json(p) for p in providers]}


@router.post("/prices", status_code=201)
async def set_price(body: PriceIn, services: Admin) -> dict[str, Any]:
    price = price_from_entry(body.model_dump(exclude={"model"}, exclude_none=True))  # a price file's entry
    version = await _run(services.prices.set_price, body.model, price)
    return {"model": body.model, "version": version}


@router.post("/prices/versions", status_code=201)
async def publish_prices(request: Request, services: Admin) -> dict[str, Any]:
    """Publish a whole price-book version; the body is a price file (README, 'Price files')."""
    prices, effective_at = parse_price_file((await request.body()).decode(errors="replace"))
    version = await _run(services.prices.publish_prices, prices, effective_at)
    return {
        "version": version,
        "models": sorted(prices),
        "effective_at": effective_at.isoformat() if effective_at else None,
    }


@router.get("/prices")
async def get_prices(services: Admin) -> dict[str, Any]:
    return price_book_json(await _run(services.ledger.price_book), services.ledger.clock.now())


@router.post("/accounts", status_code=201)
async def create_account(body: AccountIn, services: Admin) -> dict[str, Any]:
    starter = body.starter_credits if body.starter_credits is not None else services.settings.starter_credits
    account = await _run(services.accounts.create_account, body.name, parse_credits(starter, param="starter_credits"))
    return {"id": str(account.id), "name": account.name, "balance": account.balance}


@router.get("/accounts")
async def list_accounts(services: Admin) -> dict[str, Any]:
    rows = await _run(caught_up, services, lambda: services.read_models.balances.list_balances())
    return {"data": [balance_json(row) for row in rows]}


@router.get("/accounts/{account}/balance")
async def get_balance(account: str, services: Admin) -> dict[str, Any]:
    return await _run(read_balance, services, account)


@router.post("/accounts/{account}/grants", status_code=201)
async def grant_credits(account: str, body: GrantIn, services: Admin) -> dict[str, Any]:
    amount = parse_credits(body.amount)
    expires_at = body.expires_at
    result = await _run(services.accounts.grant_credits, account, amount, body.reason, body.idempotency_key, expires_at)
    return {
        "account_id": str(result.account_id),
        "amount": result.amount,
        "credited": result.credited,
        "expires_at": expires_at.isoformat() if expires_at else None,
    }


@router.post("/accounts/{account}/adjustments", status_code=201)
async def adjust_credits(account: str, body: AdjustmentIn, services: Admin) -> dict[str, Any]:
    amount = parse_credits(body.amount, allow_negative=True)
    result = await _run(services.accounts.adjust_credits, account, amount, body.reason, body.idempotency_key)
    return {
        "account_id": str(result.account_id),
        "requested": amount,
        "applied": result.amount,
        "credited": result.credited,
    }


@router.put("/accounts/{account}/caps")
async def set_caps(account: str, body: CapsIn, services: Admin) -> dict[str, Any]:
    day = parse_credits(body.day, param="day") if body.day is not None else None
    month = parse_credits(body.month, param="month") if body.month is not None else None
    if services.settings.billing_mode != "credits" and (day is not None or month is not None):
        raise NotInCreditsMode("spend caps")
    updated = await _run(
        lambda: services.accounts.set_spend_caps(account, day=day, month=month, api_key_id=body.api_key_id)
    )
    caps = {scope if scope == "account" else id_text(scope): limits for scope, limits in updated.caps.items()}
    return {"account_id": str(updated.id), "caps": plain(caps)}  # key scopes by the id the API shows


@router.get("/accounts/{account}/limits")
async def get_account_limits(account: str, services: Admin) -> dict[str, Any]:
    account_id, limits = await _run(services.accounts.get_account_limits, account)
    return limits_json("account", account_id, limits)


@router.put("/accounts/{account}/limits")
async def set_account_limits(account: str, body: LimitsIn, services: Admin) -> dict[str, Any]:
    account_id, limits = await _run(lambda: services.accounts.set_account_limits(account, **body.changes()))
    return limits_json("account", account_id, limits)


@router.post("/holds/sweep")
async def sweep_holds(services: Admin) -> dict[str, Any]:
    return await _run(sweep, services)


@router.post("/accounts/{account}/keys", status_code=201)
async def issue_key(account: str, body: KeyIn, services: Admin) -> dict[str, Any]:
    issued = await _run(services.api_keys.issue_api_key, account, body.name, body.expires_at)
    key = await _run(services.ledger.get_api_key, issued.key_id)
    return {**api_key_json(key), "key": issued.plaintext}


@router.post("/keys/{key_id}/revoke")
async def revoke_key(key_id: str, services: Admin) -> dict[str, Any]:
    return api_key_json(await _run(services.api_keys.revoke_api_key, key_id))


class PortalLinkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ttl_seconds: int = Field(default=3600, ge=60, le=604_800, description="how long the link is valid (default 1 h)")


@router.post("/accounts/{account}/portal-links", status_code=201)
async def create_portal_link(account: str, services: Admin, body: PortalLinkIn | None = None) -> dict[str, Any]:
    """A one-use sign-in link to the account's customer portal (``tallyhub portal link``), shown once."""
    ttl = timedelta(seconds=(body or PortalLinkIn()).ttl_seconds)
    issued = await _run(build_portal(services).issue_link, account, ttl)
    return link_json(issued, services.settings.dashboard_url)


USER_FILTER = Query(description="only requests the caller attributed to this end user (`user`)")
TAG_FILTER = Query(description="only requests carrying this tag (`x-tallyhub-tags`)")
METADATA_FILTER = Query(description="only requests whose metadata has this pair, given as key=value")


@router.get("/usage")
async def list_usage(
    services: Admin,
    account: str | None = None,
    user: Annotated[str | None, USER_FILTER] = None,
    tag: Annotated[str | None, TAG_FILTER] = None,
    metadata: Annotated[str | None, METADATA_FILTER] = None,
) -> dict[str, Any]:
    pair = metadata_pair(metadata)

    def query() -> Any:
        account_id = services.ledger.get_account(account).id if account else None
        return list_usage_rows(services, account_id=account_id, user=user, tag=tag, metadata=pair)

    return {"data": plain(await _run(query))}


@router.get("/requests")
async def list_requests(
    services: Admin,
    account: str | None = None,
    model: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    user: Annotated[str | None, USER_FILTER] = None,
    tag: Annotated[str | None, TAG_FILTER] = None,
    metadata: Annotated[str | None, METADATA_FILTER] = None,
) -> dict[str, Any]:
    pair = metadata_pair(metadata)

    def query() -> Any:
        account_id = services.ledger.get_account(account).id if account else None
        rows = list_request_rows(
            services, account_id=account_id, model=model, limit=limit, user=user, tag=tag, metadata=pair
        )
        return [request_json(row) for row in rows]

    return {"data": await _run(query)}


@router.get("/requests/{request_id}")
async def get_request(request_id: str, services: Admin) -> dict[str, Any]:
    """One request's receipt from the ledger itself: usage, charge, price version, attempts."""
    record = await _run(services.ledger.get_request_record, request_id)
    return request_record_json(record)


@router.get("/projections")
async def projection_status(services: Admin) -> dict[str, Any]:
    return {"data": plain(await _run(services.read_models.runner.status))}
