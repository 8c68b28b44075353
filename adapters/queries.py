"""Reads of the read models that must include the caller's own writes: the projections
are caught up first. Shared by the admin API and the CLI.

A stopped projection (projections/runner.py) is skipped by the catch-up, never waited
for, so a read of any other read model answers as always; a read of the stopped one's
view raises ``ProjectionStopped`` (503 ``projection_stopped``, naming it and the event it
stopped at) rather than answer from rows that stopped there: a balance, statement or
export that silently leaves out what came after would be wrong, not merely late."""

from collections.abc import Callable
from typing import Any

from adapters.presenters import balance_json, money_fields
from adapters.services import Services
from domain.errors import AccountNotFound


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
