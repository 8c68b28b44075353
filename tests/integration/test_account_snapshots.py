"""Account snapshots on SQLite and PostgreSQL: a hot account's history grows by two events
per request, so the ledger stores its state every ACCOUNT_SNAPSHOT_INTERVAL events (from
the group-commit writer and from one-by-one saves alike). Another process then loads it
from the newest snapshot plus the events after it, and gets exactly the state its whole
history gives. A store made before snapshots existed is refused until `tallyhub init`."""

import os
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import psycopg
import pytest

import application.ledger
from adapters.crypto.aes_gcm import AesGcmKeyVault
from adapters.crypto.key_digest import HmacApiKeyScheme
from adapters.settings import parse_database_url
from application.accounts import Accounts
from application.ledger import Ledger
from domain.account import Account
from domain.errors import NotInitialised
from tests.conftest import PgSchemas

INTERVAL = 10


def _ledger(env: dict[str, str], master: bytes) -> Ledger:
    return Ledger(env, vault=AesGcmKeyVault(master), key_scheme_factory=HmacApiKeyScheme)


@pytest.fixture(params=["sqlite", "postgres"])
def env(
    request: pytest.FixtureRequest, tmp_path: Path, pg_schemas: PgSchemas, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    monkeypatch.setattr(application.ledger, "ACCOUNT_SNAPSHOT_INTERVAL", INTERVAL)
    url = None if request.param == "sqlite" else pg_schemas.new_url()
    return parse_database_url(url, tmp_path).eventsourcing_env(create_tables=False)


def _state(account: Any) -> dict[str, Any]:
    return {name: value for name, value in vars(account).items() if name != "_pending_events"}


def test_another_process_loads_a_hot_account_from_its_newest_snapshot_exactly(env: dict[str, str]) -> None:
    master = os.urandom(32)
    first = _ledger({**env, "CREATE_TABLE": "y"}, master)
    first.initialise()
    account_id = Accounts(first).create_account("acme", starter_credits=10**9).id
    now = first.clock.now()
    first.change_account(
        account_id, lambda a: a.grant_credits(500, "promo", expires_at=now + timedelta(days=1), now=now) or []
    )
    for i in range(7):  # one by one
        hold = uuid4()
        first.change_account(
            account_id, lambda a, h=hold: a.place_hold(h, 1_000, now + timedelta(minutes=5), now=now) or []
        )
        if i % 2:
            first.change_account(account_id, lambda a, h=hold: [a.settle_hold(h, 300 + i)] and [])
    first.start_group_commit()
    try:
        for _ in range(12):  # through the writer, batches crossing the interval
            hold = uuid4()
            first.change_account(
                account_id, lambda a, h=hold: a.place_hold(h, 2_000, now + timedelta(minutes=5), now=now) or []
            )
            first.change_account(account_id, lambda a, h=hold: [a.settle_hold(h, 1_999)] and [])
    finally:
        first.stop_group_commit()
    assert first.snapshots is not None
    version = first.get_account(account_id).version
    snapshots = list(first.snapshots.get(account_id))
    assert version > 3 * INTERVAL and len(snapshots) >= 3
    assert all(s.originator_version % INTERVAL == 0 for s in snapshots[:1])  # the first is taken at the boundary
    newest = snapshots[-1].originator_version
    assert version - INTERVAL < newest <= version

    second = _ledger(env, master)
    second.load_deployment()
    asked: list[Any] = []
    events_get = second.events.get
    second.events.get = lambda *args, **kwargs: asked.append(kwargs.get("gt")) or events_get(*args, **kwargs)  # type: ignore[method-assign]
    loaded = second.get_account(account_id)
    assert asked == [newest]  # only the events after the snapshot were read
    replayed = None
    for stored in first.events.get(account_id):
        replayed = stored.mutate(replayed)
    assert isinstance(loaded, Account) and replayed is not None
    assert _state(loaded) == _state(replayed)
    assert loaded.balance == 10**9 + 500 - sum(300 + i for i in range(7) if i % 2) - 12 * 1_999
    for ledger in (first, second):
        ledger.close()


def _drop_snapshot_table(env: dict[str, str]) -> None:
    """As a store made by the version before snapshots."""
    if "SQLITE_DBNAME" in env:
        with sqlite3.connect(env["SQLITE_DBNAME"]) as conn:
            conn.execute("DROP TABLE stored_snapshots")
        return
    with psycopg.connect(
        host=env["POSTGRES_HOST"],
        port=env["POSTGRES_PORT"],
        user=env["POSTGRES_USER"],
        dbname=env["POSTGRES_DBNAME"],
        autocommit=True,
    ) as conn:
        conn.execute(f'DROP TABLE "{env["POSTGRES_SCHEMA"]}".ledger_snapshots')


def test_a_store_without_the_snapshot_table_is_refused_until_init(env: dict[str, str]) -> None:
    master = os.urandom(32)
    never = _ledger(env, master)
    with pytest.raises(NotInitialised, match="not initialised: run `tallyhub init`"):
        never.load_deployment()
    never.close()
    made = _ledger({**env, "CREATE_TABLE": "y"}, master)
    made.initialise()
    made.close()
    _drop_snapshot_table(env)
    old = _ledger(env, master)
    with pytest.raises(NotInitialised, match="earlier version without account snapshots: run `tallyhub init`"):
        old.load_deployment()
    old.close()
    again = _ledger({**env, "CREATE_TABLE": "y"}, master)  # what `tallyhub init` does on a store it finds
    again.load_deployment()
    again.close()
    _ledger(env, master).load_deployment()


def test_a_database_that_is_down_is_not_mistaken_for_a_store_to_initialise(tmp_path: Path) -> None:
    env = parse_database_url(None, tmp_path).eventsourcing_env(create_tables=False)
    unreadable = tmp_path / "not-a-database.sqlite"
    unreadable.write_bytes(b"this is not an SQLite file" * 100)
    ledger = _ledger({**env, "SQLITE_DBNAME": str(unreadable)}, os.urandom(32))
    with pytest.raises(Exception) as raised:
        ledger.load_deployment()
    assert not isinstance(raised.value, NotInitialised)
    assert "not a database" in str(raised.value)
