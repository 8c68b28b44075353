"""``/v1/me…``: what a user API key may read about its own account — the account and
key, the balance, usage rollups and the request log — from the read models.

Invariant: every query is scoped by the account of the key that authenticated the
request, and every row is checked against it again before it is returned; nothing
here takes an account from the caller. A request of another account is "not found",
exactly like a request that does not exist. The operator's upstream cost is not shown.
"""

from typing import Annotated, Any
from uuid import UUID

import anyio
from fastapi import APIRouter, Depends, Query, Request

from adapters.http.services import bearer_token, services_of
from adapters.presenters import money_fields, plain
from adapters.queries import caught_up, list_request_rows, list_usage_rows, metadata_pair
from adapters.services import Services
from adapters.time_window import optional_instant
from domain.api_key import ApiKey
from domain.errors import NotFound

router = APIRouter(prefix="/v1/me", tags=["me"])

REQUEST_FIELDS = (
    "request_id",
    "at",
    "api_key_id",
    "model",
    "endpoint",
    "outcome",
    "status",
    "error_code",
    "stream",
    "latency_ms",
    "ttfb_ms",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "usage_source",
    "charge",
    "price_book_version",
    "images",
    "end_user",
    "tags",
    "metadata",
)
USAGE_FIELDS = (
    "api_key_id",
    "model",
    "hour",
    "requests",
    "failed_requests",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "images",
    "charge",
    "estimated_requests",
)


class Caller:
    def __init__(self, services: Services, key: ApiKey) -> None:
        self.services = services
        self.key = key
        self.account_id: UUID = key.account_id


async def authenticated(request: Request) -> Caller:
    services = services_of(request)
    token = bearer_token(request)
    key = await anyio.to_thread.run_sync(services.ledger.authenticate, token)
    return Caller(services, key)


Me = Annotated[Caller, Depends(authenticated)]


@router.get("")
async def get_me(me: Me) -> dict[str, Any]:
    def read() -> dict[str, Any]:
        account = me.services.ledger.get_account(me.account_id)
        row = caught_up(me.services, lambda: me.services.read_models.balances.get_balance(me.account_id))
        if row is not None and row.account_id != me.account_id:
            raise NotFound("no such account")
        balance = {name: getattr(row, name, 0) if row else 0 for name in ("balance", "held", "available")}
        return {
            "object": "account",
            "id": str(account.id),
            "name": account.name,
            "balance": money_fields(balance, "balance", "held", "available"),
            "key": _key(me.key),
        }

    return await anyio.to_thread.run_sync(read)


@router.get("/usage")
async def get_usage(
    me: Me,
    since: Annotated[str | None, Query(description="first hour included, ISO 8601")] = None,
    until: Annotated[str | None, Query(description="first hour excluded, ISO 8601")] = None,
    user: Annotated[str | None, Query(description="only requests attributed to this end user")] = None,
    tag: Annotated[str | None, Query(description="only requests carrying this tag")] = None,
    metadata: Annotated[str | None, Query(description="only requests with this metadata pair, key=value")] = None,
) -> dict[str, Any]:
    window = optional_instant(since, "since"), optional_instant(until, "until")
    pair = metadata_pair(metadata)

    def read() -> list[Any]:
        return list_usage_rows(
            me.services,
            account_id=me.account_id,
            since=window[0],
            until=window[1],
            user=user,
            tag=tag,
            metadata=pair,
        )

    rows = [_only(row, USAGE_FIELDS) for row in await anyio.to_thread.run_sync(read) if _mine(me, row)]
    return {"object": "list", "data": rows}


@router.get("/requests")
async def list_requests(
    me: Me,
    model: str | None = None,
    status: Annotated[int | None, Query(ge=100, le=599)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    user: Annotated[str | None, Query(description="only requests attributed to this end user")] = None,
    tag: Annotated[str | None, Query(description="only requests carrying this tag")] = None,
    metadata: Annotated[str | None, Query(description="only requests with this metadata pair, key=value")] = None,
) -> dict[str, Any]:
    pair = metadata_pair(metadata)

    def read() -> list[Any]:
        return list_request_rows(
            me.services,
            account_id=me.account_id,
            model=model,
            status=status,
            limit=limit,
            user=user,
            tag=tag,
            metadata=pair,
        )

    rows = [_only(row, REQUEST_FIELDS) for row in await anyio.to_thread.run_sync(read) if _mine(me, row)]
    return {"object": "list", "data": rows}


@router.get("/requests/{request_id}")
async def get_request(request_id: str, me: Me) -> dict[str, Any]:
    try:
        parsed = UUID(request_id)
    except ValueError:
        raise NotFound(f"no request {request_id}") from None
    row = await anyio.to_thread.run_sync(
        lambda: caught_up(me.services, lambda: me.services.read_models.requests.get_request(parsed))
    )
    if row is None or not _mine(me, row):
        raise NotFound(f"no request {request_id}")
    return _only(row, REQUEST_FIELDS)


def _mine(me: Caller, row: Any) -> bool:
    return isinstance(row.account_id, UUID) and row.account_id == me.account_id


def _only(row: Any, names: tuple[str, ...]) -> dict[str, Any]:
    shown = {name: plain(getattr(row, name)) for name in names}
    if "metadata" in shown:
        shown["metadata"] = dict(row.metadata)  # an object, as it was sent
    return money_fields(shown, "charge")


def _key(key: ApiKey) -> dict[str, Any]:
    return {
        "id": str(key.id),
        "name": key.name,
        "prefix": key.prefix,
        "allowed_models": key.allowed_models,
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "retires_at": key.retires_at.isoformat() if key.retires_at else None,
    }
