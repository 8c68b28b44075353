"""Releasing holds past their deadline, so a crashed or hung ``serve`` leaves nothing
frozen, and expiring grants past theirs. The read model says which accounts have
expired holds or due grants; the ledger decides (the account aggregate releases only
holds that really are past their deadline and still open, and applies a grant's
deadline once — the grant leaves it — so a sweep racing a settlement or another sweep
changes nothing twice). Holds go first, so the credit they freed can expire at once
instead of being kept by them.

The sweeps never wait on a stopped read model (projections/runner.py): another one being
stopped does not concern them, and while the balances read model itself is stopped its
rows still name what was due up to where it stopped, and the event log names the
accounts that placed a hold or got a grant after that; the ledger decides for each."""

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import anyio
from eventsourcing.utils import get_topic

from adapters.services import Services
from adapters.workers.grant_notices import notice_expiring_grants
from domain.account import Account
from projections.balances import BalancesView, ExpiringGrant, OpenHold
from projections.read_models import unguarded

log = logging.getLogger("tallyhub.sweeper")
LOG_BATCH = 1000
Due = Callable[[BalancesView, datetime], Sequence[OpenHold] | Sequence[ExpiringGrant]]  # what a view says is due now


def sweep_expired_holds(services: Services) -> int:
    """One sweep; returns how many holds were released."""
    return _per_account(
        services,
        lambda view, now: view.list_expired_holds(now),
        Account.HoldPlaced,
        services.accounts.release_expired_holds,
        "released %d expired hold(s) on %d account(s)",
    )


def expire_due_grants(services: Services) -> int:
    """One pass over grants past their deadline; returns how many were expired."""
    return _per_account(
        services,
        lambda view, now: view.list_due_grants(now),
        Account.CreditGranted,
        services.accounts.expire_grants,
        "expired %d grant(s) on %d account(s)",
    )


def _per_account(
    services: Services, due: Due, event: type[Account.Event], act: Callable[[UUID], list[Any]], message: str
) -> int:
    """``act`` on every account the read model says has something ``due`` now (a query of
    the balances view), or that had an ``event`` since that read model stopped; the ledger
    decides what really is due. Returns how many things ``act`` did."""
    accounts = _due_accounts(services, due, event)
    done = sum(len(act(account_id)) for account_id in sorted(accounts))
    if done:
        log.info(message, done, len(accounts))
    return done


def _due_accounts(services: Services, due: Due, event: type[Account.Event]) -> set[UUID]:
    read_models = services.read_models
    read_models.runner.catch_up()  # a stopped read model is skipped, never waited for
    now = services.ledger.clock.now()
    accounts = {item.account_id for item in due(unguarded(read_models.balances), now)}
    if read_models.runner.stopped("balances") is not None:
        position = read_models.store.positions().get("balances", 0)
        accounts |= _accounts_with(services, get_topic(event), after=position)
    return accounts


def _accounts_with(services: Services, topic: str, *, after: int) -> set[UUID]:
    """The accounts with a ``topic`` event after notification ``after`` (read from the log)."""
    recorder, accounts = services.ledger.recorder, set[UUID]()
    while batch := recorder.select_notifications(after, LOG_BATCH, topics=[topic], inclusive_of_start=False):
        accounts.update(UUID(str(n.originator_id)) for n in batch)
        after = batch[-1].id
    return accounts


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
        try:  # rotated credentials whose grace period ended: recorded, and their secrets deleted
            await anyio.to_thread.run_sync(services.provider_registry.retire_due_credentials)
        except Exception:
            log.exception("retiring rotated credentials failed")
        await anyio.to_thread.run_sync(services.responses.purge_if_due)  # stored responses past the retention
        await anyio.to_thread.run_sync(notice_expiring_grants, services)  # grant.expiring (logs its own failure)
