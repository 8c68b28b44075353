"""Releasing holds past their deadline, so a crashed or hung ``serve`` leaves nothing
frozen, and expiring grants past theirs. The read model says which accounts have
expired holds or due grants; the ledger decides (the account aggregate releases only
holds that really are past their deadline and still open, and applies a grant's
deadline once — the grant leaves it — so a sweep racing a settlement or another sweep
changes nothing twice). Holds go first, so the credit they freed can expire at once
instead of being kept by them."""

import logging

import anyio

from adapters.services import Services

log = logging.getLogger("tallyhub.sweeper")


def sweep_expired_holds(services: Services) -> int:
    """One sweep; returns how many holds were released."""
    services.read_models.runner.catch_up()
    now = services.ledger.clock.now()
    accounts = {hold.account_id for hold in services.read_models.balances.list_expired_holds(now)}
    released = 0
    for account_id in sorted(accounts):
        released += len(services.ledger.release_expired_holds(account_id))
    if released:
        log.info("released %d expired hold(s) on %d account(s)", released, len(accounts))
    return released


def expire_due_grants(services: Services) -> int:
    """One pass over grants past their deadline; returns how many were expired."""
    services.read_models.runner.catch_up()
    now = services.ledger.clock.now()
    accounts = {grant.account_id for grant in services.read_models.balances.list_due_grants(now)}
    expired = 0
    for account_id in sorted(accounts):
        expired += len(services.ledger.expire_grants(account_id))
    if expired:
        log.info("expired %d grant(s) on %d account(s)", expired, len(accounts))
    return expired


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
