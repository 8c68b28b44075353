"""An in-memory ledger with its group-commit writer running, for the property tests that drive
the real writer from an event loop (the hold gate's and deferred holds' rules)."""

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

from adapters.crypto.aes_gcm import AesGcmKeyVault
from adapters.crypto.key_digest import HmacApiKeyScheme
from application.accounts import Accounts
from application.ledger import Ledger
from tests.fakes.clock import FakeClock


@contextmanager
def writing_ledger(clock: FakeClock, account: str = "acme") -> Iterator[tuple[Ledger, UUID]]:
    """The ledger (in memory, on ``clock``) and the id of its one account, the writer running;
    the writer stopped and the ledger closed afterwards."""
    ledger = Ledger(
        {"PERSISTENCE_MODULE": "eventsourcing.popo"},
        vault=AesGcmKeyVault(os.urandom(32)),
        key_scheme_factory=HmacApiKeyScheme,
        clock=clock,
    )
    ledger.initialise()
    account_id = Accounts(ledger).create_account(account).id
    ledger.start_group_commit()
    try:
        yield ledger, account_id
    finally:
        ledger.stop_group_commit()
        ledger.close()


def saved(future: "asyncio.Future[bool]") -> bool:
    """Whether the writer saved the change (not refused, not failed, not cancelled)."""
    return not future.cancelled() and future.exception() is None and future.result() is True
