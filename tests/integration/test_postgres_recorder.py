"""The PostgreSQL store's recorder sends a batch as plain binary arrays and keeps
eventsourcing's contract: the rows stored, their notification ids (in order) and what is
read back are exactly those of eventsourcing's own recorder, a conflicting version refuses
the whole batch, and ``latest_version`` is the newest stored version."""

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID, uuid4

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg import pq
from psycopg.pq import TransactionStatus

from adapters.persistence.postgres_recorder import BatchedPostgresApplicationRecorder
from application.accounts import Accounts
from tests.conftest import PG_CONNINFO, PgSchemas


@pytest.fixture
def datastore(pg_schemas: PgSchemas) -> Iterator[PostgresDatastore]:
    made = PostgresDatastore("test", "127.0.0.1", 5432, "postgres", "", schema=pg_schemas.new(), pool_size=2)
    yield made
    made.close()


def recorder(
    datastore: PostgresDatastore, kind: type[PostgresApplicationRecorder], table: str
) -> PostgresApplicationRecorder:
    made = kind(datastore, events_table_name=table)
    made.create_table()
    return made


def events(originator: UUID, versions: range) -> list[StoredEvent]:
    # states with every byte value: what a text dump would have had to escape
    return [StoredEvent(originator, v, "tests:Event", bytes(range(256)) + f"{v}".encode()) for v in versions]


def test_a_batch_is_stored_exactly_as_eventsourcing_stores_it(datastore: PostgresDatastore) -> None:
    ours = recorder(datastore, BatchedPostgresApplicationRecorder, "ours_events")
    theirs = recorder(datastore, PostgresApplicationRecorder, "theirs_events")
    first, second = uuid4(), uuid4()
    batches = [events(first, range(1, 4)), events(second, range(1, 3)) + events(first, range(4, 5))]
    for batch in batches:
        assert ours.insert_events(batch) == theirs.insert_events(batch)
    read = [ours.select_notifications(1, 10), theirs.select_notifications(1, 10)]
    assert [(n.id, n.originator_id, n.originator_version, n.topic, n.state) for n in read[0]] == [
        (n.id, n.originator_id, n.originator_version, n.topic, n.state) for n in read[1]
    ]
    assert [n.id for n in read[0]] == [1, 2, 3, 4, 5, 6]
    assert [(n.originator_id, n.originator_version, n.state) for n in read[0]] == [
        (e.originator_id, e.originator_version, e.state) for batch in batches for e in batch
    ]
    assert ours.latest_version(first) == 4 and ours.latest_version(second) == 2
    assert ours.latest_version(uuid4()) is None


def test_a_conflicting_version_refuses_the_whole_batch(datastore: PostgresDatastore) -> None:
    ours = recorder(datastore, BatchedPostgresApplicationRecorder, "ours_events")
    taken, fresh = uuid4(), uuid4()
    ours.insert_events(events(taken, range(1, 3)))
    with pytest.raises(IntegrityError):
        ours.insert_events(events(fresh, range(1, 4)) + events(taken, range(2, 3)))
    assert ours.select_events(fresh) == []
    assert ours.max_notification_id() == 2
    assert ours.latest_version(taken) == 2


def test_the_ledger_on_postgresql_stores_through_it(tmp_path: Path, pg_schemas: PgSchemas) -> None:
    from adapters.crypto.aes_gcm import AesGcmKeyVault
    from adapters.crypto.key_digest import HmacApiKeyScheme
    from adapters.settings import parse_database_url
    from application.ledger import Ledger

    env = parse_database_url(pg_schemas.new_url(), tmp_path).eventsourcing_env(create_tables=True)
    ledger = Ledger(env, vault=AesGcmKeyVault(os.urandom(32)), key_scheme_factory=HmacApiKeyScheme)
    ledger.initialise()
    account = Accounts(ledger).create_account("acme", starter_credits=5)
    assert isinstance(ledger.recorder, BatchedPostgresApplicationRecorder)
    assert ledger._latest_version(account.id) == ledger.get_account("acme").version == account.version
    assert ledger.get_account("acme").balance == 5
    ledger.close()


def test_a_batch_is_sent_with_one_sync(pg_schemas: PgSchemas, tmp_path: Path) -> None:
    """BEGIN, the lock, the NOTIFY, the insert and COMMIT go out together: the writer waits
    for the store once per batch (eventsourcing's nested pipelines synced five times), asks for
    no Flush besides the Sync (psycopg's pipeline did), and after a connection's first batch
    sends each statement as a Bind of one prepared on it (no Parse)."""
    datastore = PostgresDatastore(
        "test", "127.0.0.1", 5432, "postgres", "", schema=pg_schemas.new(), pool_size=1, max_overflow=0
    )
    ours = recorder(datastore, BatchedPostgresApplicationRecorder, "ours_events")
    ours.insert_events(events(uuid4(), range(1, 2)))  # the statements are prepared by now
    trace = tmp_path / "libpq.trace"
    with trace.open("w") as sink:
        with datastore.get_connection() as conn:
            conn.pgconn.trace(sink.fileno())
        assert ours.insert_events(events(uuid4(), range(1, 4))) == [2, 3, 4]
        with datastore.get_connection() as conn:
            conn.pgconn.untrace()
    sent = [line.split("\t") for line in trace.read_text().splitlines()]
    frontend = [fields[3].strip() for fields in sent if fields[1] == "F"]
    assert frontend.count("Sync") == 1 and "Flush" not in frontend and "Parse" not in frontend
    assert frontend.count("Bind") == 6  # BEGIN, SET LOCAL lock_timeout, LOCK, NOTIFY, INSERT, COMMIT
    datastore.close()


ONE_BATCH_UNDER_STRACE = """
import os, sys, uuid
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresDatastore
from adapters.persistence.postgres_recorder import BatchedPostgresApplicationRecorder

schema = sys.argv[1]
datastore = PostgresDatastore("test", "127.0.0.1", 5432, "postgres", "", schema=schema, pool_size=1, max_overflow=0)
recorder = BatchedPostgresApplicationRecorder(datastore, events_table_name="ours_events")
recorder.create_table()
def batch(): return [StoredEvent(uuid.uuid4(), 1, "tests:Event", bytes(range(256))) for _ in range(3)]
recorder.insert_events(batch())
os.write(1, b"one batch begins\\n")
ids = recorder.insert_events(batch())
os.write(1, b"one batch ends\\n")
assert ids == [4, 5, 6], ids
datastore.close()
"""


def test_a_batch_is_sent_in_one_write(pg_schemas: PgSchemas, tmp_path: Path) -> None:
    """The whole batch leaves in one ``sendto`` (psycopg's pipeline flushed each statement
    on its own: six writes, then the Sync and a Flush request: eight)."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    script, log = tmp_path / "one_batch.py", tmp_path / "strace.log"
    script.write_text(ONE_BATCH_UNDER_STRACE)
    done = subprocess.run(
        [
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=sendto,write",
            "-o",
            str(log),
            sys.executable,
            str(script),
            pg_schemas.new(),
        ],
        cwd=Path(__file__).parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0 and "ptrace" in done.stderr:
        pytest.skip(f"strace cannot trace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    begins = next(i for i, call in enumerate(calls) if "one batch begins" in call)
    ends = next(i for i, call in enumerate(calls) if "one batch ends" in call)
    assert sum(1 for call in calls[begins:ends] if "sendto(" in call) == 1


def test_statements_dropped_from_the_connection_are_prepared_again(pg_schemas: PgSchemas) -> None:
    """psycopg drops a connection's prepared statements after a rollback through it (DEALLOCATE
    ALL): the next batch is refused for a statement the server no longer knows, and is run once more."""
    datastore = PostgresDatastore(
        "test", "127.0.0.1", 5432, "postgres", "", schema=pg_schemas.new(), pool_size=1, max_overflow=0
    )
    ours = recorder(datastore, BatchedPostgresApplicationRecorder, "ours_events")
    first, second = uuid4(), uuid4()
    assert ours.insert_events(events(first, range(1, 3))) == [1, 2]
    with datastore.get_connection() as conn:
        conn.execute("DEALLOCATE ALL")
    assert ours.insert_events(events(second, range(1, 3))) == [3, 4]
    with datastore.get_connection() as conn:
        with conn.transaction(force_rollback=True):  # psycopg's own rollback: DEALLOCATE ALL again
            conn.execute("SELECT 1")
    assert ours.insert_events(events(first, range(3, 4))) == [5]
    assert [(n.originator_id, n.originator_version) for n in ours.select_notifications(1, 10)] == [
        (first, 1),
        (first, 2),
        (second, 1),
        (second, 2),
        (first, 3),
    ]
    datastore.close()


def test_a_connection_lost_before_its_batch_is_replaced_and_the_batch_stored(pg_schemas: PgSchemas) -> None:
    datastore = PostgresDatastore(
        "test", "127.0.0.1", 5432, "postgres", "", schema=pg_schemas.new(), pool_size=1, max_overflow=0
    )
    ours = recorder(datastore, BatchedPostgresApplicationRecorder, "ours_events")
    assert ours.insert_events(events(uuid4(), range(1, 2))) == [1]
    with datastore.get_connection() as conn:
        lost_pid = conn.info.backend_pid
    with psycopg.connect(PG_CONNINFO, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (lost_pid,))
    later = uuid4()
    assert ours.insert_events(events(later, range(1, 3))) == [2, 3]
    with datastore.get_connection() as conn:
        assert conn.info.backend_pid != lost_pid
        assert conn.pgconn.pipeline_status == pq.PipelineStatus.OFF
        assert conn.info.transaction_status == TransactionStatus.IDLE
    assert [(n.originator_id, n.originator_version) for n in ours.select_notifications(2, 10)] == [
        (later, 1),
        (later, 2),
    ]
    datastore.close()


def test_a_listener_is_notified_of_a_stored_batch_and_not_of_a_refused_one(datastore: PostgresDatastore) -> None:
    ours = recorder(datastore, BatchedPostgresApplicationRecorder, "ours_events")
    taken = uuid4()
    with psycopg.connect(PG_CONNINFO, autocommit=True) as listener:
        listener.execute(f"LISTEN {ours.channel_name}")
        ours.insert_events(events(taken, range(1, 3)))
        with pytest.raises(IntegrityError):
            ours.insert_events(events(uuid4(), range(1, 2)) + events(taken, range(2, 3)))
        ours.insert_events(events(uuid4(), range(1, 2)))
        heard = list(listener.notifies(timeout=0.5))
    assert [notify.channel for notify in heard] == [ours.channel_name] * 2


def test_a_refused_batch_leaves_its_connection_ready_for_the_next(pg_schemas: PgSchemas) -> None:
    datastore = PostgresDatastore(
        "test", "127.0.0.1", 5432, "postgres", "", schema=pg_schemas.new(), pool_size=1, max_overflow=0
    )
    ours = recorder(datastore, BatchedPostgresApplicationRecorder, "ours_events")
    taken = uuid4()
    assert ours.insert_events(events(taken, range(1, 3))) == [1, 2]
    for _ in range(3):  # the one connection goes back to the pool rolled back, each time
        with pytest.raises(IntegrityError):
            ours.insert_events(events(uuid4(), range(1, 3)) + events(taken, range(2, 3)))
    with datastore.get_connection() as conn:
        assert conn.info.transaction_status == TransactionStatus.IDLE
    later = uuid4()
    ids = ours.insert_events(events(later, range(1, 3)))
    assert [(n.originator_id, n.originator_version) for n in ours.select_notifications(1, 10)] == [
        (taken, 1),
        (taken, 2),
        (later, 1),
        (later, 2),
    ]
    assert ids == [n.id for n in ours.select_notifications(1, 10)][2:]
    datastore.close()
