"""Releasing holds past their deadline, so a crashed or hung ``serve`` leaves nothing
frozen. The read model says which accounts have expired holds; the ledger decides
(the account aggregate releases only holds that really are past their deadline and
still open, so a sweep racing a settlement changes nothing twice)."""

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


async def run_sweeps(services: Services, interval_seconds: float) -> None:
    while True:
        await anyio.sleep(interval_seconds)
        try:
            await anyio.to_thread.run_sync(sweep_expired_holds, services)
        except Exception:  # a failed sweep must not stop the next one
            log.exception("hold sweep failed")
