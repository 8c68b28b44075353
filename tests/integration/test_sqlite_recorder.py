"""The SQLite store's batched application recorder keeps eventsourcing's contract: every
event stored once with its notification id (its rowid, in order), a conflicting version
refuses the whole batch and stores none of it, batches longer than one statement are
split, and ``latest_version`` is the newest stored version."""

from pathlib import Path
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.sqlite import SQLiteDatastore

from adapters.persistence.sqlite_recorder import ROWS_PER_STATEMENT, BatchedSQLiteApplicationRecorder
from application.accounts import Accounts


@pytest.fixture
def recorder(tmp_path: Path) -> BatchedSQLiteApplicationRecorder:
    made = BatchedSQLiteApplicationRecorder(SQLiteDatastore(str(tmp_path / "events.sqlite")))
    made.create_table()
    return made


def events(originator: UUID, versions: range) -> list[StoredEvent]:
    return [StoredEvent(originator, v, "tests:Event", f'{{"n":{v}}}'.encode()) for v in versions]


def test_a_batch_gets_the_notification_ids_of_its_rows_in_order(recorder: BatchedSQLiteApplicationRecorder) -> None:
    first, second = uuid4(), uuid4()
    assert recorder.insert_events(events(first, range(1, 4))) == [1, 2, 3]
    batch = events(second, range(1, 3)) + events(first, range(4, 5))
    assert recorder.insert_events(batch) == [4, 5, 6]
    stored = recorder.select_notifications(1, 10)
    assert [(n.id, n.originator_id, n.originator_version, n.state) for n in stored] == [
        (i + 1, e.originator_id, e.originator_version, e.state)
        for i, e in enumerate(events(first, range(1, 4)) + batch)
    ]
    assert recorder.latest_version(first) == 4 and recorder.latest_version(second) == 2
    assert recorder.latest_version(uuid4()) is None


def test_a_conflicting_version_refuses_the_whole_batch(recorder: BatchedSQLiteApplicationRecorder) -> None:
    taken, fresh = uuid4(), uuid4()
    recorder.insert_events(events(taken, range(1, 3)))
    with pytest.raises(IntegrityError):
        recorder.insert_events(events(fresh, range(1, 4)) + events(taken, range(2, 3)))
    assert recorder.select_events(fresh) == []
    assert recorder.max_notification_id() == 2
    assert recorder.insert_events(events(fresh, range(1, 2))) == [3]


def test_a_batch_longer_than_one_statement_is_split_and_stored_whole(
    recorder: BatchedSQLiteApplicationRecorder,
) -> None:
    originator = uuid4()
    count = 2 * ROWS_PER_STATEMENT + 7
    ids = recorder.insert_events(events(originator, range(1, count + 1)))
    assert ids == list(range(1, count + 1))
    assert [e.originator_version for e in recorder.select_events(originator)] == list(range(1, count + 1))
    with pytest.raises(IntegrityError):  # the conflict is in the last statement: the first two are undone too
        recorder.insert_events(events(uuid4(), range(1, count)) + events(originator, range(count, count + 1)))
    assert recorder.max_notification_id() == count


def test_the_ledger_on_sqlite_stores_through_it(tmp_path: Path) -> None:
    import os

    from adapters.crypto.aes_gcm import AesGcmKeyVault
    from adapters.crypto.key_digest import HmacApiKeyScheme
    from adapters.settings import parse_database_url
    from application.ledger import Ledger

    env = parse_database_url(None, tmp_path).eventsourcing_env(create_tables=True)
    ledger = Ledger(env, vault=AesGcmKeyVault(os.urandom(32)), key_scheme_factory=HmacApiKeyScheme)
    ledger.initialise()
    account = Accounts(ledger).create_account("acme", starter_credits=5)
    assert isinstance(ledger.recorder, BatchedSQLiteApplicationRecorder)
    assert ledger._latest_version(account.id) == ledger.get_account("acme").version
    ledger.close()
