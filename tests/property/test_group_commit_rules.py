"""Whatever mix of good and bad commands forms a group-commit batch, every good command
lands exactly once, in order per account, and is answered as if the bad ones had never
been sent; every bad one fails alone, with its own error, and nothing of it is saved.

Bad here: a change whose events the store cannot encode, one whose record collides with
a stored one (the store refuses it), and one that raises after it changed the account."""

import asyncio
import os
import threading
from datetime import timedelta
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.crypto.aes_gcm import AesGcmKeyVault
from adapters.crypto.key_digest import HmacApiKeyScheme
from application.accounts import Accounts
from application.ledger import Ledger
from domain.account import Account, MovementReceipt
from domain.errors import InsufficientCredits
from tests.fakes.clock import FakeClock

ACCOUNTS = ("a", "b", "c")
STARTER = 1_000

commands = st.lists(
    st.tuples(
        st.sampled_from(["grant", "hold", "hold", "nothing", "unencodable", "colliding", "spoiled"]),
        st.sampled_from(ACCOUNTS),
        st.integers(1, 800),
    ),
    min_size=1,
    max_size=30,
)


class Unencodable:
    """A value the store's transcoder cannot encode."""


class Poison(Aggregate):
    def __init__(self, value: object) -> None:
        self.value = value


class Spoiled(Exception):
    """Raised by a change after it had changed the account."""


def change_for(kind: str, index: int, account_id: UUID, amount: int, ledger: Ledger) -> Any:
    label = f"c{index}"

    def change(account: Account) -> list[Aggregate] | None:
        if kind == "nothing":
            return None
        if kind == "hold":
            account.place_hold(
                UUID(int=index + 1), amount, ledger.clock.now() + timedelta(hours=1), now=ledger.clock.now()
            )
            return []
        account.grant_credits(amount, reason=label)
        if kind == "unencodable":
            return [Poison(Unencodable())]
        if kind == "colliding":  # the receipt of the grant made before the batch
            return [MovementReceipt(account_id=account_id, kind="grant", idempotency_key="seed", amount=amount)]
        if kind == "spoiled":
            raise Spoiled(label)
        return []

    return change


def expected(batch: list[tuple[str, str, int]]) -> tuple[list[Any], dict[str, list[str]]]:
    """Each command's answer and each account's new events, had the bad ones never been sent."""
    available = {name: STARTER for name in ACCOUNTS}
    answers: list[Any] = []
    landed: dict[str, list[str]] = {name: [] for name in ACCOUNTS}
    for index, (kind, name, amount) in enumerate(batch):
        if kind == "grant":
            available[name] += amount
            landed[name].append(f"c{index}")
            answers.append(True)
        elif kind == "hold" and amount <= available[name]:
            available[name] -= amount
            landed[name].append(f"hold:{UUID(int=index + 1)}")
            answers.append(True)
        elif kind == "hold":
            answers.append(InsufficientCredits)
        elif kind == "nothing":
            answers.append(False)
        else:
            answers.append({"unencodable": TypeError, "colliding": IntegrityError, "spoiled": Spoiled}[kind])
    return answers, landed


def label_of(event: Any) -> str:
    return f"hold:{event.request_id}" if hasattr(event, "request_id") else event.reason


@settings(max_examples=60, deadline=None)
@given(batch=commands)
def test_every_good_command_lands_once_in_order_and_every_bad_one_fails_alone(batch) -> None:
    ledger = Ledger(
        {"PERSISTENCE_MODULE": "eventsourcing.popo"},
        vault=AesGcmKeyVault(os.urandom(32)),
        key_scheme_factory=HmacApiKeyScheme,
        clock=FakeClock(),
    )
    ledger.initialise()
    ids = {name: Accounts(ledger).create_account(name).id for name in ACCOUNTS}
    for name in ACCOUNTS:
        Accounts(ledger).grant_credits(name, STARTER, idempotency_key="seed")
    versions = {name: ledger.get_account(name).version for name in ACCOUNTS}
    blocker = Accounts(ledger).create_account("blocker").id
    ledger.start_group_commit()
    busy, go = threading.Event(), threading.Event()
    holding = threading.Thread(target=ledger.change_account, args=(blocker, lambda _: busy.set() or go.wait(5) and []))
    holding.start()
    try:
        assert busy.wait(5)
        before = ledger.writer.batches

        async def run() -> list[Any]:
            futures = [
                ledger.start_account_change(ids[name], change_for(kind, i, ids[name], amount, ledger))
                for i, (kind, name, amount) in enumerate(batch)
            ]
            go.set()  # all queued behind the busy writer: they form its next batch
            return await asyncio.gather(*futures, return_exceptions=True)

        answers = asyncio.run(run())
        holding.join(5)
        assert ledger.writer.batches - before == 1
    finally:
        go.set()
        ledger.stop_group_commit()
    want_answers, want_landed = expected(batch)
    for got, want in zip(answers, want_answers, strict=True):
        if isinstance(want, type):
            assert isinstance(got, want), (got, want)
        else:
            assert got is want, (got, want)
    for name in ACCOUNTS:
        events = list(ledger.events.get(ids[name], gt=versions[name]))
        assert [label_of(e) for e in events] == want_landed[name]
    ledger.close()
