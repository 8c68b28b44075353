"""The PostgreSQL store's recorder sends a batch as plain binary arrays and keeps
eventsourcing's contract: the rows stored, their notification ids (in order) and what is
read back are exactly those of eventsourcing's own recorder, a conflicting version refuses
the whole batch, and ``latest_version`` is the newest stored version."""

import os
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg.pq import TransactionStatus

from adapters.persistence.postgres_recorder import BatchedPostgresApplicationRecorder
from application.accounts import Accounts
from tests.conftest import PgSchemas


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
    for the store once per batch (eventsourcing's nested pipelines synced five times)."""
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
    assert sum(1 for fields in sent if fields[1] == "F" and fields[3].startswith("Sync")) == 1
    datastore.close()


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
