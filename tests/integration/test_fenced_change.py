"""A change that loses every optimistic save to another writer of the same account still
lands: its last try is fenced (application/ledger.py ``_change_fenced``,
adapters/persistence/fence.py), on SQLite and on PostgreSQL.

The other writer is another ``Ledger`` on the same store (another ``serve`` process): it
commits to the account inside every load→save window of the first, as a process committing
a batch every few milliseconds does on a hot account. Before the fence, all
``MAX_SAVE_ATTEMPTS`` tries lost and the change was answered 503 (AccountContended)."""

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from adapters.crypto.aes_gcm import AesGcmKeyVault
from adapters.crypto.key_digest import HmacApiKeyScheme
from adapters.settings import parse_database_url
from application.accounts import Accounts
from application.ledger import MAX_SAVE_ATTEMPTS, Ledger
from domain.account import Account, MovementReceipt
from tests.conftest import PgSchemas


@pytest.fixture(params=["sqlite", "postgres"])
def two_processes(
    request: pytest.FixtureRequest, tmp_path: Path, pg_schemas: PgSchemas
) -> Iterator[tuple[Ledger, Ledger]]:
    """Two ledgers on one store (two ``serve`` processes), sharing the account acme."""
    if request.param == "sqlite":
        env = parse_database_url(None, tmp_path).eventsourcing_env(create_tables=False)
    else:
        env = parse_database_url(pg_schemas.new_url(), tmp_path).eventsourcing_env(create_tables=False)
    master = os.urandom(32)
    first = Ledger({**env, "CREATE_TABLE": "y"}, vault=AesGcmKeyVault(master), key_scheme_factory=HmacApiKeyScheme)
    first.initialise()
    Accounts(first).create_account("acme")
    second = Ledger(env, vault=AesGcmKeyVault(master), key_scheme_factory=HmacApiKeyScheme)
    second.load_deployment()
    yield first, second
    for ledger in (first, second):
        ledger.close()


def overtaken_load(ledger: Ledger, other: Ledger) -> tuple[Callable[[], Account], list[int]]:
    """A load of acme by ``ledger`` after which ``other`` at once commits a credit of 1 to it:
    every save of what was loaded is refused. Returns the load and the list of the other's
    commits (one per load)."""
    commits: list[int] = []
    get_account = ledger.get_account

    def load() -> Account:
        account = get_account("acme")
        Accounts(other).adjust_credits("acme", 1, "the other process's batch")
        commits.append(1)
        return account

    return load, commits


def adjusted(amount: int) -> Callable[[Account], list[Aggregate]]:
    def change(account: Account) -> list[Aggregate]:
        account.adjust(amount, "the change that keeps losing")
        return []

    return change


def test_a_change_overtaken_on_every_try_lands_fenced_and_is_counted_once(two_processes: tuple[Ledger, Ledger]) -> None:
    first, second = two_processes
    load, commits = overtaken_load(first, second)

    assert first.change(load, adjusted(1_000)) is True

    assert len(commits) == MAX_SAVE_ATTEMPTS + 1  # every optimistic try lost; the fenced one did not
    for ledger in (first, second):
        assert ledger.get_account("acme").balance == 1_000 + len(commits)


def test_the_fenced_try_decides_on_the_events_that_came_in_before_it(two_processes: tuple[Ledger, Ledger]) -> None:
    """The change sees the other process's last commit (read under the lock): here it finds
    nothing left to do, so it saves nothing."""
    first, second = two_processes
    load, commits = overtaken_load(first, second)

    def unless_already_credited(account: Account) -> list[Aggregate] | None:
        if account.balance >= MAX_SAVE_ATTEMPTS + 1:
            return None
        account.adjust(1_000, "not needed once the other process credited enough")
        return []

    assert first.change(load, unless_already_credited) is False

    assert first.get_account("acme").balance == len(commits) == MAX_SAVE_ATTEMPTS + 1


def test_a_fenced_try_refused_for_what_it_saves_is_refused_not_contended(two_processes: tuple[Ledger, Ledger]) -> None:
    """A record that exists is the change's own refusal (an IntegrityError, as before the
    fence), not the store busy (AccountContended, an OperationalError answered 503)."""
    first, second = two_processes
    account_id = first.get_account("acme").id
    terms = {"reason": "once"}
    first.save(MovementReceipt(account_id=account_id, kind="adjustment", idempotency_key="k", amount=5, terms=terms))
    load, _ = overtaken_load(first, second)

    def with_the_same_receipt(account: Account) -> list[Aggregate]:
        account.adjust(5, "once")
        return [MovementReceipt(account_id=account_id, kind="adjustment", idempotency_key="k", amount=5, terms=terms)]

    with pytest.raises(IntegrityError):
        first.change(load, with_the_same_receipt)

    balance_of_the_other_commits = first.get_account("acme").balance
    assert balance_of_the_other_commits == MAX_SAVE_ATTEMPTS + 1  # nothing of the refused change


def test_no_other_insert_commits_while_the_fenced_try_decides(two_processes: tuple[Ledger, Ledger]) -> None:
    """The lock is held from the read of the newer events to the commit: the other process's
    commit started meanwhile waits for it (and then lands, retried on the fresh state)."""
    first, second = two_processes
    load, commits = overtaken_load(first, second)
    other_committed = threading.Event()
    waited: list[bool] = []

    def other_process_commits() -> None:
        Accounts(second).adjust_credits("acme", 1, "a batch started while the fence is held")
        other_committed.set()

    other = threading.Thread(target=other_process_commits)

    def change(account: Account) -> list[Aggregate]:
        if len(commits) == MAX_SAVE_ATTEMPTS + 1:  # the fenced try: its load was the last
            other.start()
            waited.append(not other_committed.wait(0.5))
        account.adjust(1_000, "the change that keeps losing")
        return []

    assert first.change(load, change) is True
    other.join(timeout=60)

    assert waited == [True]
    assert other_committed.is_set()
    assert first.get_account("acme").balance == 1_000 + len(commits) + 1


def test_a_movement_whose_change_reads_the_store_lands_fenced_once(
    two_processes: tuple[Ledger, Ledger], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Accounts``' own path (``change_account`` one by one, as the group-commit writer's
    redo runs it): the change looks its receipt up while the fence is held, through another
    connection (a read is not held up by the insert lock), and the movement lands once."""
    first, second = two_processes
    load, commits = overtaken_load(first, second)
    get_account = first.get_account
    account_id = get_account("acme").id
    monkeypatch.setattr(first, "get_account", lambda ref: load() if ref in ("acme", account_id) else get_account(ref))

    result = Accounts(first).adjust_credits("acme", 1_000, "a top-up", idempotency_key="top-up-1")

    assert result.credited
    assert get_account("acme").balance == 1_000 + len(commits)
    monkeypatch.undo()
    assert Accounts(first).adjust_credits("acme", 1_000, "a top-up", idempotency_key="top-up-1").credited is False
    assert first.get_account("acme").balance == 1_000 + len(commits)
