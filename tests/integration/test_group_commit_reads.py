"""The group-commit writer's reads of the store (issue 21): a kept account that saves events
in a batch is proven fresh by its save, not by a read before it; when another process moved
it, that save is refused and the batch redone on the fresh state, so no change is lost or
decided on stale state; and the callers on an event loop are answered with one wake-up of
the loop per batch, not one per change."""

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import OperationalError

from adapters.crypto.aes_gcm import AesGcmKeyVault
from adapters.crypto.key_digest import HmacApiKeyScheme
from adapters.settings import parse_database_url
from application.accounts import Accounts
from application.ledger import Ledger
from domain.account import Account
from domain.errors import InsufficientCredits
from tests.conftest import PgSchemas


@pytest.fixture(params=["sqlite", "postgres"])
def two_ledgers(
    request: pytest.FixtureRequest, tmp_path: Path, pg_schemas: PgSchemas
) -> Iterator[tuple[Ledger, Ledger]]:
    url = None if request.param == "sqlite" else pg_schemas.new_url()
    env = parse_database_url(url, tmp_path).eventsourcing_env(create_tables=False)
    master = os.urandom(32)
    first = Ledger({**env, "CREATE_TABLE": "y"}, vault=AesGcmKeyVault(master), key_scheme_factory=HmacApiKeyScheme)
    first.initialise()
    second = Ledger(env, vault=AesGcmKeyVault(master), key_scheme_factory=HmacApiKeyScheme)
    second.load_deployment()
    yield first, second
    for ledger in (first, second):
        ledger.stop_group_commit()
        ledger.close()


def count_version_reads(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> list[UUID]:
    """The accounts whose newest version the writer reads from now on."""
    reads: list[UUID] = []
    read = ledger.recorder.latest_version  # type: ignore[attr-defined]

    def counted(account_id: UUID) -> int | None:
        reads.append(account_id)
        result: int | None = read(account_id)
        return result

    monkeypatch.setattr(ledger.recorder, "latest_version", counted)
    return reads


def hold(ledger: Ledger, request_id: UUID, amount: int) -> Callable[[Account], list[Any]]:
    return lambda account: account.place_hold(request_id, amount, ledger.clock.now()) or []


def test_a_busy_account_is_saved_without_reading_its_version_first(two_ledgers, monkeypatch) -> None:
    first, _ = two_ledgers
    account = Accounts(first).create_account("acme").id
    first.start_group_commit()
    Accounts(first).grant_credits("acme", 1_000)  # saved by the writer, which now keeps the account
    reads = count_version_reads(first, monkeypatch)
    for _ in range(5):
        assert first.change_account(account, hold(first, uuid4(), 10))
    assert reads == []
    assert first.get_account(account).held == 50


def test_a_kept_account_another_process_moved_is_refused_by_its_save_and_redone(two_ledgers, monkeypatch) -> None:
    first, second = two_ledgers
    account = Accounts(first).create_account("acme").id
    first.start_group_commit()
    Accounts(first).grant_credits("acme", 100)  # kept by the writer at this version
    Accounts(second).grant_credits("acme", 1_000)  # the store moves past what the writer keeps
    reads = count_version_reads(first, monkeypatch)
    alone: list[UUID] = []
    assert first.writer is not None
    change_alone = first.writer._change_alone
    monkeypatch.setattr(first.writer, "_change_alone", lambda a, c: alone.append(a) or change_alone(a, c))
    placed = uuid4()
    assert first.change_account(account, hold(first, placed, 60))  # fits the kept state too: it has events
    assert reads == [account]  # no read before its save: its save found the newer event, then one read said why
    assert alone == []  # another process moved the account: the batch was decided again whole, not one by one
    fresh = first.get_account(account)
    assert (fresh.balance, fresh.held) == (1_100, 60) and placed.hex in fresh.holds
    assert fresh.version == second.get_account(account).version


def test_a_refusal_on_a_kept_account_is_checked_before_it_is_answered(two_ledgers, monkeypatch) -> None:
    first, second = two_ledgers
    account = Accounts(first).create_account("acme").id
    first.start_group_commit()
    Accounts(first).grant_credits("acme", 100)
    Accounts(second).grant_credits("acme", 1_000)
    reads = count_version_reads(first, monkeypatch)
    placed = uuid4()
    assert first.change_account(account, hold(first, placed, 1_000))  # a 402 on the kept 100, not on 1,100
    assert reads == [account]
    assert first.get_account(account).held == 1_000


def test_callers_on_an_event_loop_are_answered_with_one_wake_up_per_batch(two_ledgers) -> None:
    first, _ = two_ledgers
    account = Accounts(first).create_account("acme", starter_credits=1_000).id
    first.start_group_commit()
    first.stop_group_commit()  # stopped, the writer queues what it is given: one batch on its start
    writer = first.writer
    assert writer is not None
    wake_ups = 0

    async def changes() -> list[bool]:
        nonlocal wake_ups
        loop = asyncio.get_running_loop()
        call_soon_threadsafe = loop.call_soon_threadsafe

        def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal wake_ups
            wake_ups += 1
            return call_soon_threadsafe(*args, **kwargs)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
        futures = [writer.submit_async(account, hold(first, uuid4(), 100)) for _ in range(12)]
        writer.start()
        return await asyncio.gather(*futures, return_exceptions=True)

    batches_before = writer.batches
    outcomes = asyncio.run(changes())
    assert outcomes[:10] == [True] * 10
    assert all(isinstance(outcome, InsufficientCredits) for outcome in outcomes[10:])
    assert writer.batches - batches_before == 1 and wake_ups == 1
    assert first.get_account(account).held == 1_000


def test_a_failed_check_redoes_the_batch_one_by_one(two_ledgers, monkeypatch) -> None:
    first, second = two_ledgers
    account = Accounts(first).create_account("acme").id
    first.start_group_commit()
    Accounts(first).grant_credits("acme", 100)
    Accounts(second).grant_credits("acme", 1_000)

    def unreachable(account_id: UUID) -> int | None:
        raise OperationalError("the store went away")

    monkeypatch.setattr(first.recorder, "latest_version", unreachable)
    placed = uuid4()
    assert first.change_account(account, hold(first, placed, 1_000))  # decided alone, on what the store holds
    assert first.get_account(account).held == 1_000
