"""The SQLite recorder's ``select_notifications`` (rows built without the generic
constructors, adapters/persistence/sqlite_recorder.py) gives, for any stored events and any
query (start, inclusive or not, stop, topics, limit), exactly the ``Notification`` objects
eventsourcing's own method gives: the same ids and fields, in the same order, each a
``Notification`` whose originator id is a ``UUID`` equal, hash and safety flag included."""

import tempfile
from pathlib import Path
from uuid import UUID

from eventsourcing.persistence import Notification, StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.persistence.sqlite_recorder import BatchedSQLiteApplicationRecorder

TOPICS = ("tests:Placed", "tests:Settled", "tests:Recorded")
events = st.lists(
    st.tuples(st.uuids(), st.sampled_from(TOPICS), st.binary(max_size=40)),
    min_size=0,
    max_size=12,
    unique_by=lambda e: e[0],
)
queries = st.tuples(
    st.none() | st.integers(0, 14),  # start
    st.integers(0, 14),  # limit
    st.none() | st.integers(0, 14),  # stop
    st.lists(st.sampled_from(TOPICS), unique=True, max_size=2),  # topics
    st.booleans(),  # inclusive of start
)


def described(notifications: list[Notification]) -> list[tuple[object, ...]]:
    return [
        (
            type(n),
            n.id,
            type(n.originator_id),
            n.originator_id,
            hash(n.originator_id),
            n.originator_id.is_safe if isinstance(n.originator_id, UUID) else None,
            n.originator_version,
            n.topic,
            n.state,
            n,
        )
        for n in notifications
    ]


@settings(max_examples=60, deadline=None)
@given(stored=events, asked=st.lists(queries, min_size=1, max_size=5))
def test_notifications_are_the_ones_eventsourcing_builds(
    stored: list[tuple[UUID, str, bytes]], asked: list[tuple[int | None, int, int | None, list[str], bool]]
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        datastore = SQLiteDatastore(str(Path(directory) / "events.sqlite"))
        ours = BatchedSQLiteApplicationRecorder(datastore)
        ours.create_table()
        theirs = SQLiteApplicationRecorder(datastore)
        if stored:
            ours.insert_events([StoredEvent(uuid, 1, topic, state) for uuid, topic, state in stored])
        for start, limit, stop, topics, inclusive in asked:
            got = ours.select_notifications(start, limit, stop, topics, inclusive_of_start=inclusive)
            expected = theirs.select_notifications(start, limit, stop, topics, inclusive_of_start=inclusive)
            assert described(list(got)) == described(list(expected))
        datastore.close()
