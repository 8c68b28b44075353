"""Reads of the read models that must include the caller's own writes: the projections
are caught up first. Shared by the admin API and the CLI.

A stopped projection (projections/runner.py) is skipped by the catch-up, never waited
for, so a read of any other read model answers as always; a read of the stopped one's
view raises ``ProjectionStopped`` (503 ``projection_stopped``, naming it and the event it
stopped at) rather than answer from rows that stopped there: a balance, statement or
export that silently leaves out what came after would be wrong, not merely late."""

from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from adapters.presenters import balance_json, money_fields, plain
from adapters.services import Services
from domain.errors import AccountNotFound, InvalidRequest
from projections.request_log import hours_window, usage_of


def caught_up(services: Services, query: Callable[[], Any]) -> Any:
    """``query()`` once every running projection has applied every event committed so far."""
    services.read_models.runner.catch_up()
    return query()


def read_balance(services: Services, account: str) -> dict[str, Any]:
    """The balances row, plus what of it expires and when next (from the account itself)."""
    found = services.ledger.get_account(account)
    row = caught_up(services, lambda: services.read_models.balances.get_balance(found.id))
    if row is None:
        raise AccountNotFound(f"no account {account}")
    next_expiry = found.next_expiry
    return money_fields(
        {
            **balance_json(row),
            "expiring": found.expiring,
            "next_expiry": next_expiry.isoformat() if next_expiry else None,
        },
        "expiring",
    )


def metadata_pair(value: str | None) -> tuple[str, str] | None:
    """A ``metadata`` filter, ``key=value`` (split at the first ``=``), as a pair."""
    if value is None:
        return None
    key, sep, text = value.partition("=")
    if not sep or not key:
        raise InvalidRequest("metadata must be given as key=value", param="metadata")
    return key, text


def list_request_rows(
    services: Services,
    *,
    account_id: UUID | None = None,
    model: str | None = None,
    status: int | None = None,
    limit: int = 100,
    user: str | None = None,
    tag: str | None = None,
    metadata: tuple[str, str] | None = None,
) -> list[Any]:
    """The request log, newest first, filtered (attribution's filters match exactly)."""
    requests = services.read_models.requests
    return caught_up(  # type: ignore[no-any-return]
        services,
        lambda: requests.list_requests(
            account_id=account_id, model=model, status=status, limit=limit, user=user, tag=tag, metadata=metadata
        ),
    )


def list_usage_rows(
    services: Services,
    *,
    account_id: UUID | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    user: str | None = None,
    tag: str | None = None,
    metadata: tuple[str, str] | None = None,
) -> list[Any]:
    """Usage per account, key, provider, model and hour (``since <= hour < until``): the hourly
    rollups, or, filtered by an attribution, the sums of the matching request-log rows in the
    rollups' shape (the rollups keep no end user or tag)."""
    read_models = services.read_models
    if user is None and tag is None and metadata is None:
        return caught_up(  # type: ignore[no-any-return]
            services, lambda: read_models.usage.list_usage(account_id=account_id, since=since, until=until)
        )

    def summed() -> list[Any]:
        rows = read_models.requests.iter_requests(
            *hours_window(since, until), account_id=account_id, user=user, tag=tag, metadata=metadata
        )
        return usage_of(rows, since, until)

    return caught_up(services, summed)  # type: ignore[no-any-return]


def request_json(row: Any) -> dict[str, Any]:
    """A request-log row as the APIs show it: its metadata as an object."""
    data: dict[str, Any] = plain(row)
    data["metadata"] = dict(row.metadata)
    return data
