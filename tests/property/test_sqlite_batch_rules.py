"""The SQLite recorder's batches (one statement in SQLite's own transaction, or several in an
explicit one) keep eventsourcing's contract: any sequence of batches, some refused for a
version already stored, gives the notification ids, the refusals and the stored rows that
eventsourcing's own recorder gives for the same sequence."""

import tempfile
from pathlib import Path
from unittest import mock
from uuid import UUID

from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.persistence import sqlite_recorder
from adapters.persistence.sqlite_recorder import BatchedSQLiteApplicationRecorder

ORIGINATORS = [UUID(int=n + 1) for n in range(3)]
rows = st.tuples(st.integers(0, len(ORIGINATORS) - 1), st.integers(1, 6))
batches = st.lists(st.lists(rows, max_size=8), min_size=1, max_size=8)


def outcomes(recorder: SQLiteApplicationRecorder, sequence: list[list[tuple[int, int]]]) -> list[object]:
    said: list[object] = []
    for batch in sequence:
        stored = [StoredEvent(ORIGINATORS[o], v, "tests:Event", f"{o}:{v}".encode()) for o, v in batch]
        try:
            said.append(list(recorder.insert_events(stored) or []))
        except IntegrityError:
            said.append("refused")
    notifications = recorder.select_notifications(1, 1_000)
    said.append([(n.id, n.originator_id, n.originator_version, n.state) for n in notifications])
    return said


@settings(max_examples=60, deadline=None)
@given(sequence=batches, rows_per_statement=st.sampled_from([2, 3, sqlite_recorder.ROWS_PER_STATEMENT]))
def test_any_sequence_of_batches_is_stored_and_refused_as_eventsourcing_stores_it(
    sequence: list[list[tuple[int, int]]], rows_per_statement: int
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        expected_recorder = SQLiteApplicationRecorder(SQLiteDatastore(str(Path(directory) / "expected.sqlite")))
        recorder = BatchedSQLiteApplicationRecorder(SQLiteDatastore(str(Path(directory) / "batched.sqlite")))
        for made in (expected_recorder, recorder):
            made.create_table()
        expected = outcomes(expected_recorder, sequence)
        with mock.patch.object(sqlite_recorder, "ROWS_PER_STATEMENT", rows_per_statement):
            assert outcomes(recorder, sequence) == expected
        for made in (expected_recorder, recorder):
            made.datastore.close()
