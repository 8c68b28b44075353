"""Releasing holds past their deadline, so a crashed or hung ``serve`` leaves nothing
frozen, and expiring grants past theirs. The read model says which accounts have
expired holds or due grants; the ledger decides (the account aggregate releases only
holds that really are past their deadline and still open, and applies a grant's
deadline once — the grant leaves it — so a sweep racing a settlement or another sweep
changes nothing twice). Holds go first, so the credit they freed can expire at once
instead of being kept by them."""

import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

import anyio

from adapters.services import Services

log = logging.getLogger("tallyhub.sweeper")


def sweep_expired_holds(services: Services) -> int:
    """One sweep; returns how many holds were released."""
    return _per_account(services, services.read_models.balances.list_expired_holds,
                        services.ledger.release_expired_holds, "released %d expired hold(s) on %d account(s)")


def expire_due_grants(services: Services) -> int:
    """One pass over grants past their deadline; returns how many were expired."""
    return _per_account(services, services.read_models.balances.list_due_grants,
                        services.ledger.expire_grants, "expired %d grant(s) on %d account(s)")


def _per_account(services: Services, due: Callable[[datetime], Iterable[Any]],
                 act: Callable[[UUID], list[Any]], message: str) -> int:
    """``act`` on every account the read model says has something ``due`` now; the ledger
    decides what really is due. Returns how many things ``act`` did."""
    services.read_models.runner.catch_up()
    accounts = {item.account_id for item in due(services.ledger.clock.now())}
    done = sum(len(act(account_id)) for account_id in sorted(accounts))
    if done:
        log.info(message, done, len(accounts))
    return done


def sweep(services: Services) -> dict[str, int]:
    """One sweep: expired holds released, then due grants expired."""
    return {"released": sweep_expired_holds(services), "expired_grants": expire_due_grants(services)}


async def run_sweeps(services: Services, interval_seconds: float) -> None:
    while True:
        await anyio.sleep(interval_seconds)
        try:
            await anyio.to_thread.run_sync(sweep, services)
        except Exception:  # a failed sweep must not stop the next one
            log.exception("hold sweep failed")
