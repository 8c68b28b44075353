"""Stored responses (application/stored_responses.py) on every backend the event store runs
on (in memory, SQLite, PostgreSQL):

- what is stored comes back as it was kept, and a conversation continues from it;
- nothing of the content is in the database in plaintext, and an envelope moved to another
  row (another account or response id) does not open;
- only the account that stored a response reads, continues or deletes it, and another
  account's response looks exactly like an unknown one;
- past the retention a response is never returned, and ``purge_expired`` deletes it;
- a deleted response is gone from the table;
- after a master-key rotation rows sealed under the older key still open;
- with storage off nothing is kept and ``previous_response_id`` is refused, saying why;
- storing writes no event: the ledger is unchanged;
- the embedded sweeps purge what is past the retention.
"""

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import anyio
import psycopg
import pytest

from adapters.bootstrap import build_services, in_memory_ledger
from adapters.crypto.aes_gcm import AesGcmKeyVault, generate_master_key
from adapters.crypto.key_digest import HmacApiKeyScheme
from adapters.crypto.key_ring import KeyRing
from adapters.persistence.response_store import build_stored_responses
from adapters.settings import Settings, parse_database_url
from adapters.workers.hold_sweeper import run_sweeps
from application import key_management as km
from application.ledger import Ledger
from application.stored_responses import (
    PreviousResponseNotFound,
    PreviousResponseStoreOff,
    StoredResponses,
    sealing_context,
)
from tests.conftest import PG_CONNINFO, PgSchemas
from tests.fakes.clock import FakeClock

K1, K2 = f"k1:{generate_master_key()}", f"k2:{generate_master_key()}"
DAY = 86_400
ALICE, BOB = UUID("00000000-0000-4000-8000-00000000a11c"), UUID("00000000-0000-4000-8000-000000000b0b")


class Backend:
    """One event store that can be opened again with another key ring, as a new process would."""

    def __init__(self, kind: str, tmp_path: Path, pg_schemas: PgSchemas) -> None:
        self.kind = kind
        self.clock = FakeClock()
        if kind == "sqlite":
            self.path = tmp_path / "store.sqlite"
            self.env = {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(self.path),
                "CREATE_TABLE": "y",
            }
        elif kind == "postgres":
            url = pg_schemas.new_url()
            self.schema = url.rpartition("schema=")[2]
            self.env = parse_database_url(url, data_dir=tmp_path).eventsourcing_env(create_tables=True)
        else:
            self.env = {"PERSISTENCE_MODULE": "eventsourcing.popo"}
        self.kept: Ledger | None = None  # in memory there is one ledger: "reopening" swaps its key ring
        self.ledger: Ledger | None = None  # the one last opened

    @contextmanager
    def store(self, *keys: str, enabled: bool = True, retention_days: int = 30) -> Iterator[StoredResponses]:
        vault = AesGcmKeyVault(KeyRing.parse(",".join(keys or (K1,)), source="TEST"))
        if self.kind == "memory":
            if self.kept is None:
                self.kept = Ledger(self.env, vault=vault, key_scheme_factory=HmacApiKeyScheme, clock=self.clock)
            self.kept.vault = vault
            ledger = self.kept
        else:
            ledger = Ledger(self.env, vault=vault, key_scheme_factory=HmacApiKeyScheme, clock=self.clock)
        self.ledger = ledger
        settings = Settings(responses_store=enabled, responses_retention_days=retention_days)
        try:
            yield build_stored_responses(settings, ledger)
        finally:
            if ledger is not self.kept:
                ledger.close()

    def raw_rows(self) -> list[tuple[Any, ...]]:
        """Every column of every row, read past the store."""
        if self.kind == "sqlite":
            with sqlite3.connect(self.path) as db:
                return db.execute(
                    "SELECT response_id, account_id, created_at, envelope FROM stored_responses"
                ).fetchall()
        assert self.kind == "postgres"
        with psycopg.connect(PG_CONNINFO) as db:
            return db.execute(
                f"SELECT response_id, account_id::text, created_at, envelope FROM {self.schema}.stored_responses"
            ).fetchall()

    def execute(self, statement: str, parameters: tuple[Any, ...]) -> None:
        """Change the table behind the store's back (``?`` placeholders)."""
        if self.kind == "sqlite":
            with sqlite3.connect(self.path) as db:
                db.execute(statement, parameters)
            return
        with psycopg.connect(PG_CONNINFO, autocommit=True) as db:
            db.execute(
                statement.replace("stored_responses", f"{self.schema}.stored_responses").replace("?", "%s"), parameters
            )


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, pg_schemas: PgSchemas) -> Backend:
    return Backend(request.param, tmp_path, pg_schemas)


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path, pg_schemas: PgSchemas) -> Backend:
    return Backend(request.param, tmp_path, pg_schemas)


def turn(response_id: str, said: str, answer: str, before: list[dict[str, Any]] | None = None) -> tuple[Any, Any]:
    """A Response object and the whole conversation through it, in input-item form."""
    output = [
        {
            "type": "message",
            "id": f"msg_{response_id}",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": answer, "annotations": []}],
        }
    ]
    response = {"id": response_id, "object": "response", "status": "completed", "output": output, "store": True}
    items = [*(before or []), {"role": "user", "content": said}, *output]
    return response, items


def run(function: Any, *args: Any) -> Any:
    return anyio.run(function, *args)


def test_a_kept_response_comes_back_and_the_conversation_continues_from_it(backend: Backend) -> None:
    first, first_items = turn("resp_one", "Name a colour.", "Blue.")
    with backend.store() as store:
        run(store.keep, ALICE, first, first_items)
        second, second_items = turn("resp_two", "Another?", "Green.", run(store.items_before, ALICE, "resp_one"))
        run(store.keep, ALICE, second, second_items)
    with backend.store() as store:  # another process
        assert run(store.get, ALICE, "resp_one") == first
        assert run(store.items_before, ALICE, "resp_two") == second_items
        assert [item.get("content") for item in run(store.input_items, ALICE, "resp_two")] == [
            "Name a colour.",
            first["output"][0]["content"],
            "Another?",
        ]


def test_nothing_of_the_content_is_in_the_database_in_plaintext(database: Backend) -> None:
    secret = f"unique-prompt-{uuid4().hex}"
    response, items = turn("resp_secret", f"my secret is {secret}", f"noted: {secret}")
    with database.store() as store:
        run(store.keep, ALICE, response, items)
        [row] = store.rows.all()  # type: ignore[attr-defined]
        opened = store.vault.open(row.envelope, context=sealing_context(ALICE, "resp_secret"))
    assert secret.encode() in opened  # the envelope holds the content...
    assert all(secret not in str(column) for column in database.raw_rows()[0])  # ...and nothing else does
    if database.kind == "sqlite":
        files = [path for path in database.path.parent.iterdir() if path.name.startswith(database.path.name)]
        assert files and all(secret.encode() not in path.read_bytes() for path in files)  # the file and its WAL


def test_an_envelope_moved_to_another_row_does_not_open(database: Backend) -> None:
    with database.store() as store:
        for response_id, account in (("resp_a", ALICE), ("resp_b", ALICE), ("resp_c", BOB)):
            run(store.keep, account, *turn(response_id, "hi", f"answer {response_id}"))
    [envelope_a] = [row[3] for row in database.raw_rows() if row[0] == "resp_a"]
    database.execute("UPDATE stored_responses SET envelope = ? WHERE response_id = ?", (envelope_a, "resp_b"))
    database.execute("UPDATE stored_responses SET account_id = ? WHERE response_id = ?", (str(ALICE), "resp_c"))
    with database.store() as store:
        assert run(store.get, ALICE, "resp_a")["id"] == "resp_a"
        assert run(store.get, ALICE, "resp_b") is None  # resp_a's envelope under resp_b's id
        assert run(store.get, ALICE, "resp_c") is None  # Bob's envelope under Alice's account
        assert run(store.get, BOB, "resp_c") is None


def test_only_the_account_that_stored_a_response_reads_continues_or_deletes_it(backend: Backend) -> None:
    with backend.store() as store:
        run(store.keep, ALICE, *turn("resp_alice", "hi", "hello"))
        assert run(store.get, BOB, "resp_alice") is None
        assert run(store.input_items, BOB, "resp_alice") is None
        with pytest.raises(PreviousResponseNotFound) as theirs:
            run(store.items_before, BOB, "resp_alice")
        with pytest.raises(PreviousResponseNotFound) as unknown:
            run(store.items_before, BOB, "resp_nobody")
        assert str(theirs.value) == str(unknown.value).replace("resp_nobody", "resp_alice")
        assert theirs.value.param == "previous_response_id" and theirs.value.code == "previous_response_not_found"
        assert run(store.delete, BOB, "resp_alice") is False
        assert run(store.get, ALICE, "resp_alice")["id"] == "resp_alice"


def test_past_the_retention_a_response_is_never_returned_and_is_purged(backend: Backend) -> None:
    with backend.store(retention_days=2) as store:
        run(store.keep, ALICE, *turn("resp_old", "hi", "hello"))
        backend.clock.advance(days=1)
        run(store.keep, ALICE, *turn("resp_new", "hi", "hello"))
        backend.clock.advance(days=1, seconds=-1)
        assert run(store.get, ALICE, "resp_old") is not None  # 2 days less a second old
        assert store.purge_expired() == 0
        backend.clock.advance(seconds=2)
        assert run(store.get, ALICE, "resp_old") is None  # past it: never returned, purged or not
        with pytest.raises(PreviousResponseNotFound):
            run(store.items_before, ALICE, "resp_old")
        assert [row.response_id for row in store.rows.all()] == ["resp_new", "resp_old"]  # type: ignore[attr-defined]
        assert store.purge_expired() == 1
        assert [row.response_id for row in store.rows.all()] == ["resp_new"]  # type: ignore[attr-defined]
        assert run(store.get, ALICE, "resp_new") is not None


def test_a_storing_process_purges_now_and_then_and_so_do_the_sweeps(backend: Backend) -> None:
    with backend.store(retention_days=1) as store:
        run(store.keep, ALICE, *turn("resp_old", "hi", "hello"))  # its first keep purges (nothing yet)
        backend.clock.advance(days=2)
        run(store.keep, ALICE, *turn("resp_new", "hi", "hello"))  # purged a moment ago: not again
        assert len(store.rows.all()) == 2  # type: ignore[attr-defined]
        assert store.purge_if_due() == 0  # nor here, within PURGE_EVERY
        store._last_purge = float("-inf")  # PURGE_EVERY later
        assert store.purge_if_due() == 1
        assert [row.response_id for row in store.rows.all()] == ["resp_new"]  # type: ignore[attr-defined]


def test_a_deleted_response_is_gone_from_the_table(backend: Backend) -> None:
    with backend.store() as store:
        run(store.keep, ALICE, *turn("resp_gone", "hi", "hello"))
        run(store.keep, ALICE, *turn("resp_kept", "hi", "hello"))
        assert run(store.delete, ALICE, "resp_gone") is True
        assert run(store.delete, ALICE, "resp_gone") is False
        assert run(store.get, ALICE, "resp_gone") is None
        with pytest.raises(PreviousResponseNotFound):
            run(store.items_before, ALICE, "resp_gone")
        assert [row.response_id for row in store.rows.all()] == ["resp_kept"]  # type: ignore[attr-defined]
    if backend.kind != "memory":
        assert [row[0] for row in backend.raw_rows()] == ["resp_kept"]


def test_rows_sealed_under_an_older_master_key_open_after_a_rotation(backend: Backend) -> None:
    with backend.store(K1) as store:
        run(store.keep, ALICE, *turn("resp_k1", "hi", "under k1"))
    with backend.store(K2, K1) as store:  # k2 is the newest; k1 still in the ring
        run(store.keep, ALICE, *turn("resp_k2", "hi", "under k2"))
        assert run(store.get, ALICE, "resp_k1")["output"][0]["content"][0]["text"] == "under k1"
        assert {row.response_id: row.kid for row in store.rows.all()} == {  # type: ignore[attr-defined]
            "resp_k1": "k1",
            "resp_k2": "k2",
        }
    with backend.store(K2) as store:  # k1 retired: its rows open no more, and are treated as gone
        assert run(store.get, ALICE, "resp_k1") is None
        assert run(store.get, ALICE, "resp_k2") is not None


def test_rotate_master_reseals_stored_responses_and_status_keeps_their_key_until_then(database: Backend) -> None:
    with database.store(K1) as store:
        run(store.keep, ALICE, *turn("resp_old", "hi", "sealed by k1"))
    with database.store(K2, K1, enabled=False) as store:  # storage off since: its rows still count
        ledger = database.ledger
        assert ledger is not None
        ledger.initialise()
        before = km.secrets_status(ledger, store)
        assert "k1" in before.in_use and "1 stored response(s)" in before.in_use["k1"]
        assert "k1" not in before.retirable_kids and before.rotation_needed

        result = km.rotate_master(ledger, store)
        assert (result.responses_resealed, result.responses_unreadable) == (1, 0)
        assert result.status is not None and "k1" in result.status.retirable_kids
        assert km.rotate_master(ledger, store).responses_resealed == 0  # idempotent
    with database.store(K2) as store:  # k1 retired: the row opens under k2 alone, unchanged
        assert run(store.get, ALICE, "resp_old")["output"][0]["content"][0]["text"] == "sealed by k1"


def test_with_storage_off_nothing_is_kept_and_a_previous_response_is_refused(backend: Backend) -> None:
    with backend.store(enabled=False) as store:
        run(store.keep, ALICE, *turn("resp_off", "hi", "hello"))
        assert store.rows.all() == []  # type: ignore[attr-defined]
        assert run(store.get, ALICE, "resp_off") is None
        with pytest.raises(PreviousResponseStoreOff) as refused:
            run(store.items_before, ALICE, "resp_off")
    assert refused.value.param == "previous_response_id" and "TALLYHUB_RESPONSES_STORE" in str(refused.value)


def test_storing_writes_no_event_and_no_event_holds_the_content(backend: Backend) -> None:
    secret = f"unique-prompt-{uuid4().hex}"
    with backend.store() as store:
        assert backend.ledger is not None
        backend.ledger.initialise()
        before = _events(backend.ledger)
        run(store.keep, ALICE, *turn("resp_quiet", f"say {secret}", secret))
        assert run(store.get, ALICE, "resp_quiet") is not None
        after = _events(backend.ledger)
        run(store.delete, ALICE, "resp_quiet")
        assert after == before == _events(backend.ledger) and before
    assert all(secret.encode() not in state for state in before)


def _events(ledger: Ledger) -> list[bytes]:
    return [notification.state for notification in ledger.recorder.select_notifications(0, 10_000)]


def test_the_embedded_sweeps_purge_expired_responses(tmp_path: Path) -> None:
    clock = FakeClock()
    ledger = in_memory_ledger(clock=clock)
    ledger.initialise()
    services = build_services(
        Settings(data_dir=tmp_path, responses_store=True, responses_retention_days=1), ledger=ledger
    )
    store = services.responses
    run(store.keep, ALICE, *turn("resp_swept", "hi", "hello"))  # this keep purged (nothing): the sweeps wait
    clock.advance(days=1, seconds=1)
    store._last_purge = float("-inf")  # as if PURGE_EVERY had passed

    async def sweeping_until_purged() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(run_sweeps, services, 0.01)
            with anyio.fail_after(10):
                while store.rows.all():  # type: ignore[attr-defined]
                    await anyio.sleep(0.01)
            tasks.cancel_scope.cancel()

    anyio.run(sweeping_until_purged)
    ledger.close()
