"""The ledger's repository copies a cached account under the lock that fast-forwards it
(application/aggregate_cache.py): a copy is the account as of one version, never one version's
number with a later event's balance in it (nor a ``RuntimeError`` from a dictionary changing
size while it is copied, which the 30-second soak met as a 500 on a payment webhook)."""

import os
import threading
from typing import Any

from adapters.crypto.aes_gcm import AesGcmKeyVault
from adapters.crypto.key_digest import HmacApiKeyScheme
from application.accounts import Accounts
from application.aggregate_cache import CopiedUnderLockRepository
from application.ledger import Ledger
from domain.account import Account

CREDIT = 5


class PausingValue:
    """Stands for one of the cached account's first attributes: the first deep copy of it
    pauses (the copy's version already taken, its balance not yet) until ``go_on`` or a second."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.copying = threading.Event()
        self.go_on = threading.Event()

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        if not self.copying.is_set():
            self.copying.set()
            self.go_on.wait(timeout=1)  # fixed: nothing can fast-forward meanwhile, so this times out
        return self.value


def test_a_copy_of_a_cached_account_is_never_torn_by_a_fast_forward_in_another_thread() -> None:
    ledger = Ledger(
        {"PERSISTENCE_MODULE": "eventsourcing.popo", "AGGREGATE_CACHE_MAXSIZE": "100"},
        vault=AesGcmKeyVault(os.urandom(32)),
        key_scheme_factory=HmacApiKeyScheme,
    )
    ledger.initialise()
    assert isinstance(ledger.repository, CopiedUnderLockRepository)
    account_id = Accounts(ledger).create_account("acme").id
    before = ledger.get_account("acme")  # the account is in the cache now
    cached: Account = ledger.repository.cache.get(account_id)  # type: ignore[union-attr]
    pausing = PausingValue(cached.name)
    cached.name = pausing  # type: ignore[assignment]  # early in the object's attributes: before its balance
    copies: list[Account] = []

    def copy_it() -> None:
        copies.append(ledger.repository.get(account_id))

    def credit_and_fast_forward() -> None:  # another thread: a movement saved, then the cache brought up to date
        Accounts(ledger).adjust_credits("acme", CREDIT, "another thread's movement")
        ledger.repository.get(account_id)
        pausing.go_on.set()

    copier = threading.Thread(target=copy_it)
    copier.start()
    assert pausing.copying.wait(timeout=10)
    other = threading.Thread(target=credit_and_fast_forward)
    other.start()
    copier.join(timeout=30)
    other.join(timeout=30)

    (copy,) = copies
    as_of_one_version = {(before.version, before.balance), (before.version + 1, before.balance + CREDIT)}
    assert (copy.version, copy.balance) in as_of_one_version
    assert ledger.get_account("acme").balance == before.balance + CREDIT
    ledger.close()
