"""``Ledger.save_unreturned`` (the group-commit writer's save) against ``Ledger.save``: the same
events stored with the same notification ids, the same hooks run, the same recordings handed to
a listener; only the recordings nobody reads are not built."""

import copy
from typing import Any

from eventsourcing.persistence import Recording
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.bootstrap import in_memory_ledger
from application.ledger import Ledger
from tests.fakes.note import Note


def _ledger(commits: list[int], heard: list[list[Recording[Any]]] | None) -> Ledger:
    ledger = in_memory_ledger()
    ledger._on_commit = lambda: commits.append(1)  # noqa: SLF001 - the hook the constructor takes
    if heard is not None:
        ledger.on_recorded = lambda recordings: heard.append(list(recordings))
    return ledger


def _rows(ledger: Ledger) -> list[tuple[Any, ...]]:
    return [
        (n.id, n.originator_id, n.originator_version, n.topic, n.state)
        for n in ledger.recorder.select_notifications(start=1, limit=1_000)
    ]


# each save: the edits of each of its notes (a new note saved with no edit has its created event)
saves = st.lists(st.lists(st.lists(st.text(max_size=5), max_size=3), max_size=3), max_size=4)


@settings(max_examples=60, deadline=None)
@given(saves=saves, listening=st.booleans())
def test_save_unreturned_stores_and_tells_what_save_does(saves: list[list[list[str]]], listening: bool) -> None:
    commits: dict[str, list[int]] = {"save": [], "unreturned": []}
    heard: dict[str, list[list[Recording[Any]]]] = {"save": [], "unreturned": []}
    general = _ledger(commits["save"], heard["save"] if listening else None)
    fast = _ledger(commits["unreturned"], heard["unreturned"] if listening else None)
    try:
        for edits_of_notes in saves:
            notes = [Note("new") for _ in edits_of_notes]
            for note, edits in zip(notes, edits_of_notes, strict=True):
                for text in edits:
                    note.edit(text)
            twins = copy.deepcopy(notes)  # the same pending events, ids and timestamps
            returned = general.save(*notes)
            fast.save_unreturned(*twins)
            assert len(returned) == sum(1 + len(edits) for edits in edits_of_notes)
            assert all(not note.pending_events for note in twins)
        assert _rows(fast) == _rows(general)
        assert commits["unreturned"] == commits["save"]  # on_commit once a save that stored events
        assert [[(r.domain_event, r.notification) for r in batch] for batch in heard["unreturned"]] == [
            [(r.domain_event, r.notification) for r in batch] for batch in heard["save"]
        ]
        if listening:
            assert len(heard["save"]) == sum(1 for edits in saves if edits)
    finally:
        general.close()
        fast.close()


def test_the_group_commit_writer_saves_through_save_unreturned() -> None:
    ledger = in_memory_ledger()
    ledger.start_group_commit()
    try:
        assert ledger.writer is not None
        assert ledger.writer._save == ledger.save_unreturned  # noqa: SLF001 - what the writer was given
    finally:
        ledger.stop_group_commit()
        ledger.close()
