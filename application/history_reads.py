"""Reading the whole history, or one window of it, for replay and verify: the stored rows of
some topics, in position order, as plain tuples of what the store keeps.

Replay and verify read every charge ever made (or every charge of a window); building an
eventsourcing ``Notification`` and a ``UUID`` per row cost more than the arithmetic done
with it. The SQLite and PostgreSQL recorders (adapters/persistence/event_reads.py) answer
``HistoryStore``: plain rows, and the positions of a topic's events recorded in a window of
event times, found through an index by time. Other recorders (the in-memory store of the
tests) are read through ``select_notifications`` instead; the rows are the same.

Invariants kept here:
- nothing here writes; every row of the chosen topics with ``after < position <= stop`` is
  yielded exactly once, in position order;
- ``rows_in_window`` yields at least every row whose event time is in ``[since, until)``
  (the index is only a coarse filter: callers still test each row's own time exactly), and
  with an index it reads the window's rows only, whatever the length of the history;
- ``decode`` is orjson's: integers beyond 64 bits come back as floats, so a caller that
  needs a number exact tests its type and, if it is not an int, reads the state with
  ``decode_exact`` (the standard parser) instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

import orjson

from application.event_scan import NotificationRecorder, Progress, last_position
from domain.request_record import ChargeFacts, charge_facts

# (position, originator id as 32 hex digits, originator version, topic, JSON state)
Row = tuple[int, str, int, str, bytes]
BATCH = 10_000


@runtime_checkable
class HistoryStore(Protocol):
    def select_rows(self, topics: Sequence[str], after: int, stop: int, limit: int) -> Sequence[Row]:
        """Up to ``limit`` rows of ``topics`` with ``after < position <= stop``, in position order."""
        ...

    def select_rows_at(self, positions: Sequence[int]) -> Sequence[Row]:
        """The rows at ``positions`` (sorted), in position order."""
        ...

    def window_positions(
        self, topic: str, since: datetime | None, until: datetime | None, stop: int
    ) -> Sequence[int] | None:
        """The positions (≤ ``stop``) of ``topic``'s events whose time may be in ``[since, until)``,
        found through an index by time; None when the store has no such index for ``topic``."""
        ...


def rows(
    recorder: NotificationRecorder,
    topics: Sequence[str],
    *,
    after: int = 0,
    stop: int | None = None,
    progress: Progress | None = None,
) -> Iterator[Row]:
    """Every row of ``topics`` with ``after < position <= stop`` (stop: the last now).

    A ``HistoryStore`` is read ``BATCH`` positions at a time: a range that small holds at
    most ``BATCH`` rows, so no query sorts or skips more than its own range (PostgreSQL,
    asked for the first rows of the topics after a position, sorted the whole rest of the
    history on each call: quadratic)."""
    wanted = sorted(set(topics))
    last = last_position(recorder) if stop is None else stop
    if isinstance(recorder, HistoryStore):
        for start in range(after, last, BATCH):
            yield from recorder.select_rows(wanted, start, min(start + BATCH, last), BATCH)
            if progress is not None:
                progress(min(start + BATCH, last), last)
    else:
        yield from _notification_rows(recorder, wanted, after, last, progress)
    if progress is not None:
        progress(last, last)


def rows_in_window(
    recorder: NotificationRecorder,
    topic: str,
    since: datetime | None,
    until: datetime | None,
    *,
    stop: int,
    progress: Progress | None = None,
) -> Iterator[Row]:
    """The rows of ``topic`` up to ``stop`` whose time may be in ``[since, until)``: through the
    store's index by time when it has one, else every row of ``topic``."""
    store = recorder if isinstance(recorder, HistoryStore) else None
    positions = store.window_positions(topic, since, until, stop) if store is not None else None
    if store is None or positions is None:
        yield from rows(recorder, (topic,), stop=stop, progress=progress)
        return
    ordered = sorted(positions)
    for start in range(0, len(ordered), BATCH):
        yield from store.select_rows_at(ordered[start : start + BATCH])
        if progress is not None:
            progress(ordered[min(start + BATCH, len(ordered)) - 1], stop)
    if progress is not None:
        progress(stop, stop)


def decode(state: bytes) -> dict[str, Any]:
    """A state as orjson reads it (see the module docstring for integers beyond 64 bits)."""
    decoded: dict[str, Any] = orjson.loads(state)
    return decoded


def decode_exact(state: bytes) -> dict[str, Any]:
    """A state with every integer a Python int, however large."""
    decoded: dict[str, Any] = json.loads(bytes(state))
    return decoded


def _notification_rows(
    recorder: NotificationRecorder, topics: Sequence[str], after: int, last: int, progress: Progress | None
) -> Iterator[Row]:
    position = after
    while position < last:
        found = recorder.select_notifications(position, BATCH, stop=last, topics=topics, inclusive_of_start=False)
        yield from ((n.id, _hex(n.originator_id), n.originator_version, n.topic, n.state) for n in found)
        if len(found) < BATCH:
            break
        position = found[-1].id
        if progress is not None:
            progress(position, last)


def _hex(originator_id: Any) -> str:
    return originator_id.hex if isinstance(originator_id, UUID) else str(originator_id).replace("-", "")


def record_facts(state: bytes) -> tuple[dict[str, Any], ChargeFacts]:
    """A request record's decoded state and the facts replay and verify read of it, every
    amount and count exact (read again by the standard parser if orjson made one a float)."""
    data = decode(state)
    facts = charge_facts(data["details"])
    if _inexact(facts):
        data = decode_exact(state)
        facts = charge_facts(data["details"])
    return data, facts


def _inexact(facts: ChargeFacts) -> bool:
    counts = facts.counts
    return float in (type(facts.charge), type(facts.cost), type(facts.price_book_version)) or (
        counts is not None and float in map(type, counts)
    )
