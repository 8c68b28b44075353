"""``grant.expiring`` notices, run with the sweeps (``serve``'s in embedded mode, ``tallyhub
worker``'s in server mode): each grant whose deadline is within ``GRANT_EXPIRING_DAYS`` days
is noticed once (application/alerts.py ``GrantExpiryCheck``; the outbox ignores an id it
has seen, so every sweep and every worker may run it)."""

import logging
from uuid import UUID

from adapters.services import Services
from application.alerts import GrantExpiryCheck
from projections.read_models import unguarded

log = logging.getLogger("tallyhub.alerts")


def notice_expiring_grants(services: Services) -> int:
    """One check; returns how many notices were handed to the outbox (0 on failure, logged)."""
    try:
        balances = unguarded(services.read_models.balances)

        def name(account_id: UUID) -> str:
            row = balances.get_balance(account_id)
            return row.name if row is not None else ""

        check = GrantExpiryCheck(balances.list_due_grants, name, services.deliveries)
        return check.run(services.ledger.clock.now())
    except Exception:  # a failed check must not stop the sweeps
        log.exception("checking for expiring grants failed")
        return 0
