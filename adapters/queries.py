"""Reads of the read models that must include the caller's own writes: the projections
are caught up first. Shared by the admin API and the CLI."""

from collections.abc import Callable
from typing import Any

from adapters.presenters import balance_json
from adapters.services import Services
from domain.errors import AccountNotFound


def caught_up(services: Services, query: Callable[[], Any]) -> Any:
    services.read_models.runner.catch_up()
    return query()


def read_balance(services: Services, account: str) -> dict[str, Any]:
    account_id = services.ledger.get_account(account).id
    row = caught_up(services, lambda: services.read_models.balances.get_balance(account_id))
    if row is None:
        raise AccountNotFound(f"no account {account}")
    return balance_json(row)
